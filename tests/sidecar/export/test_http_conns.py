"""The HTTP server's connections: over the cap the oldest closed (counted), an idle one closed.

Real sockets against the real aiohttp server (``serve``), with the cap and the idle timeout made
small for the test."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

from sidecar.export import api, http_conns
from sidecar.export.api import make_app, serve
from tests.sidecar.export.test_http_refusals import raw_request

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_a_connection_over_the_cap_closes_the_oldest_is_counted_and_healthz_answers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(http_conns, "MAX_CONNECTIONS", 4)
    counts: Counter[str] = Counter()
    app = make_app(metrics=bytes, lookup=lambda _: None, ready=lambda: (True, ""), counts=counts)
    served = await serve(app, "127.0.0.1", 0)
    idle = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(4)]  # never a request
    try:
        await asyncio.sleep(0.05)
        with caplog.at_level(logging.WARNING, logger="sidecar.export.http_conns"):
            first = await raw_request(served.port, HEALTHZ)
            second = await raw_request(served.port, HEALTHZ)
        assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200")
        for reader, _ in idle[:2]:  # the two oldest were closed to make room
            assert await asyncio.wait_for(reader.read(100), timeout=5.0) == b""
        assert counts["evicted_connections"] == 2 and len(caplog.records) == 1  # one line a minute
    finally:
        for _, writer in idle:
            writer.close()
        await served.close()


async def test_a_connection_that_sends_nothing_or_half_a_head_is_closed_after_the_idle_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api, "IDLE_TIMEOUT_S", 0.3)
    app = make_app(metrics=bytes, lookup=lambda _: None, ready=lambda: (True, ""), counts=Counter())
    served = await serve(app, "127.0.0.1", 0)
    try:
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", served.port)
        half_reader, half = await asyncio.open_connection("127.0.0.1", served.port)
        half.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        await half.drain()
        for reader in (silent_reader, half_reader):  # the server closes: end of stream
            assert await asyncio.wait_for(reader.read(100), timeout=5.0) == b""
        silent.close()
        half.close()
    finally:
        await served.close()
