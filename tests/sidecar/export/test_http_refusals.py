"""Requests aiohttp refuses before a handler runs: counted, logged as one short warning line."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

from sidecar.export.api import make_app, serve
from sidecar.export.http_refusals import ServerLog


async def raw_request(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    head = await reader.read(200)
    writer.close()
    return head


async def test_unreadable_requests_get_400_are_counted_and_log_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counts: Counter[str] = Counter()
    app = make_app(metrics=bytes, lookup=lambda _: None, ready=lambda: (True, ""), counts=counts)
    served = await serve(app, "127.0.0.1", 0)
    try:
        with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
            bad_byte = await raw_request(served.port, b"GET /v1/requests/\xff HTTP/1.1\r\nHost: x\r\n\r\n")
            too_long = await raw_request(
                served.port, b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            ok = await raw_request(served.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        await served.close()
    assert bad_byte.split(b" ")[1] == b"400" and too_long.split(b" ")[1] == b"400"
    assert ok.split(b" ")[1] == b"200"
    assert counts["rejected_malformed"] == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert not errors and len(warnings) == 1  # the second within LOG_EVERY_S: counted, not logged
    assert warnings[0].exc_info is None and "rejected_malformed" in warnings[0].getMessage()


def test_a_handler_bug_is_still_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    counts: Counter[str] = Counter()
    log = ServerLog(counts)
    try:
        raise ZeroDivisionError("a bug")
    except ZeroDivisionError as exc:
        with caplog.at_level(logging.ERROR, logger="aiohttp.server"):
            log.exception("Error handling request from %s", "127.0.0.1", exc_info=exc)
    assert counts == Counter()
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None
