"""Request bodies that are declared, not sent: they hold nothing, and a slow one is cut at a deadline.

A client once declared ``Content-Length: 100000000000`` and sent a byte at a time: the proxy
held the declared length against its body budget, and every other request got a 503 for as
long as the connection stayed open. These clients talk raw HTTP/1.1 over a socket, so the
proxy sees exactly the declared length and the bytes the test sends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from sidecar.proxy import forward
from tests.sidecar.proxy.conftest import Proxied

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi " * 40}], "max_tokens": 2}


@asynccontextmanager
async def _upload(
    proxied: Proxied, declared_bytes: int, sent: bytes
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A completion whose headers declare ``declared_bytes`` of body, of which only ``sent`` comes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxied.tap.port)
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared_bytes}\r\n\r\n"
    )
    writer.write(head.encode() + sent)
    await writer.drain()
    try:
        yield reader, writer
    finally:
        writer.close()


async def _status(reader: asyncio.StreamReader) -> tuple[int, dict[str, object]]:
    """The status and JSON body of the answer on ``reader`` (an error answer: it has a length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5.0)
    lines = head.decode().split("\r\n")
    length = next(int(v) for k, _, v in (x.partition(": ") for x in lines) if k.lower() == "content-length")
    return int(lines[0].split()[1]), json.loads(await reader.readexactly(length))


async def _good(s: aiohttp.ClientSession, proxied: Proxied) -> tuple[int, int]:
    """The statuses of a completion with a body and of a GET without one."""
    async with s.post(f"{proxied.url}/v1/chat/completions", json=CHAT) as r:
        await r.read()
        posted = r.status
    async with s.get(f"{proxied.url}/v1/models") as r:
        return posted, r.status


async def test_a_declared_length_over_the_limit_is_a_413_at_once_and_holds_nothing(
    proxied: Proxied,
) -> None:
    async with (
        aiohttp.ClientSession() as s,
        _upload(proxied, 100_000_000_000, b'{"model":') as (reader, _),
    ):
        status, body = await _status(reader)  # before the body: the client sent 9 of 100 GB
        assert status == 413 and body["error"]["type"] == "request_too_large"  # type: ignore[index]
        assert await _good(s, proxied) == (200, 200)
    assert proxied.tap.stats().events[("proxy", "too_large")] == 1
    assert ("proxy", "bodies_over_budget") not in proxied.tap.stats().events


async def test_idle_uploads_that_declare_legal_bodies_hold_nothing(
    proxied: Proxied, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each declares the largest body allowed (4096 B here) against a budget of 2,000 B and sends
    one byte: before, the first held 4096 B and every other request with a body or not got a 503."""
    monkeypatch.setattr(forward, "BODIES_HELD_BYTES", 2_000)
    idle = [_upload(proxied, 4096, b"{") for _ in range(3)]
    async with aiohttp.ClientSession() as s, idle[0], idle[1], idle[2]:
        await asyncio.sleep(0.2)  # the three are being read
        assert [await _good(s, proxied) for _ in range(3)] == [(200, 200)] * 3
    assert ("proxy", "bodies_over_budget") not in proxied.tap.stats().events


async def test_a_body_that_does_not_arrive_in_time_is_a_408_and_then_holds_nothing(
    proxied: Proxied, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow client holds at worst what it sent, until the deadline; a request without a body is
    never refused for the budget."""
    monkeypatch.setattr(forward, "BODIES_HELD_BYTES", 2_000)
    monkeypatch.setattr(forward, "BODY_READ_TIMEOUT_S", 1.0)
    async with aiohttp.ClientSession() as s, _upload(proxied, 4000, b" " * 1_900) as (reader, _):
        await asyncio.sleep(0.2)  # its 1,900 B are read and held
        assert await _good(s, proxied) == (503, 200)  # its bytes and this body are over the budget
        status, body = await _status(reader)
        assert status == 408 and body["error"]["type"] == "request_body_timeout"  # type: ignore[index]
        assert await reader.read() == b""  # and its connection closed
        assert await _good(s, proxied) == (200, 200)  # what it held is free
    counts = proxied.tap.stats().events
    assert counts[("proxy", "body_timeout")] == 1 and counts[("proxy", "bodies_over_budget")] == 1
