"""Faults: upstream down, slow, malformed; a client that leaves mid-stream aborts the upstream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from sidecar.errors import ConfigError
from sidecar.proxy.tap import ProxyTap
from tests.sidecar.proxy.conftest import PRICES, AnyProxy, drain, start_tap
from tests.support import free_port

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


class Upstream:
    """A hand-made upstream: a slow stream that notes whether it was cut off, and broken SSE."""

    def __init__(self) -> None:
        self.cut_off = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for _ in range(200):
                await resp.write(b'data: {"choices":[{"delta":{"content":"w"}}]}\n\n')
                await asyncio.sleep(0.05)
        except (ConnectionError, asyncio.CancelledError):
            self.cut_off.set()
            raise
        return resp

    async def _broken(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("pieces"):  # a plain answer that arrives in pieces
            doc = {
                "choices": [{"text": "w" * 100_000}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 9},
            }
            raw = json.dumps(doc).encode()
            whole = web.StreamResponse(headers={"Content-Type": "application/json"})
            await whole.prepare(request)
            for i in range(0, len(raw), 30_000):
                await whole.write(raw[i : i + 30_000])
                await asyncio.sleep(0.05)
            await whole.write_eof()
            return whole
        if body.get("cut"):  # one chunk, then the connection dies mid-answer
            cut = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await cut.prepare(request)
            await cut.write(b'data: {"choices":[{"text":"w"}]}\n\n')
            assert request.transport is not None
            request.transport.close()
            return cut
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"delta":{"content":"w"}}]}\n\ndata: {oops\n\n')
        await resp.write(b'data: {"choices":[],"usage":{"prompt_tokens":"NaN","completion_tokens":1e99}}\n\n')
        await resp.write(b"data: no blank line at the end")
        return resp

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._slow)
        app.router.add_post("/v1/completions", self._broken)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def upstream(mode: str) -> AsyncIterator[tuple[Upstream, AnyProxy]]:
    up = Upstream()
    await up.start()
    tap = start_tap(up.url, mode)
    try:
        yield up, tap
    finally:
        tap.stop()
        await up.stop()


async def test_an_unreachable_upstream_is_a_502_with_a_clear_body_and_counted(mode: str) -> None:
    tap = start_tap(f"http://127.0.0.1:{free_port()}", mode)
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"http://127.0.0.1:{tap.port}/v1/chat/completions", json=CHAT) as r,
        ):
            body = await r.json()
        assert r.status == 502 and body["error"]["type"] == "upstream_unavailable"
        assert "unreachable" in body["error"]["message"]
        assert tap.stats().events[("proxy", "upstream_down")] == 1
        assert tap.due(time.monotonic()) == ([], [])  # nothing reached an engine
    finally:
        tap.stop()


async def test_a_slow_stream_is_relayed_as_it_comes_and_does_not_hold_other_requests(
    upstream: tuple[Upstream, AnyProxy],
) -> None:
    up, tap = upstream
    url = f"http://127.0.0.1:{tap.port}"
    async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/chat/completions", json=CHAT) as r:
        t0 = time.monotonic()
        first = await r.content.readuntil(b"\n\n")
        assert b'"content":"w"' in first and time.monotonic() - t0 < 2.0  # not held until the end (10 s)
        async with s.post(f"{url}/v1/completions", json={"prompt": "x"}) as other:
            await other.read()  # another request is answered while the slow one streams
        # the client leaves mid-stream: the proxy closes the upstream connection
    await asyncio.wait_for(up.cut_off.wait(), timeout=5.0)
    for _ in range(50):
        if tap.stats().events.get(("proxy", "disconnected")):
            break
        await asyncio.sleep(0.1)
    assert tap.stats().events[("proxy", "disconnected")] == 1
    work, infos = await drain(tap)
    statuses = {i.attributes["jouletrace.request.status"] for i in infos if i.end_s is not None}
    assert work and "disconnected" in statuses


async def test_malformed_upstream_sse_is_passed_through_and_counted(
    upstream: tuple[Upstream, AnyProxy],
) -> None:
    _, tap = upstream
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"http://127.0.0.1:{tap.port}/v1/completions", json={"prompt": "x", "stream": True}) as r,
    ):
        text = await r.text()
    assert "data: {oops\n\n" in text and text.endswith("data: no blank line at the end")
    counts = tap.stats().events
    assert counts[("proxy", "malformed_sse")] == 2 and counts[("proxy", "usage")] == 1
    work, infos = await drain(tap)
    assert len(work) == 1 and infos[-1].prompt_tokens == 1  # the prompt's estimate, not "NaN"


async def test_an_upstream_that_breaks_off_mid_stream_cuts_the_client_off_too(
    upstream: tuple[Upstream, AnyProxy],
) -> None:
    _, tap = upstream
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"http://127.0.0.1:{tap.port}/v1/completions", json={"prompt": "x", "stream": True, "cut": True}
        ) as r,
    ):
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):  # a truncated answer, not a clean end
            await r.read()
    work, infos = await drain(tap)
    assert tap.stats().events[("proxy", "upstream_broken")] == 1
    assert infos[-1].attributes["jouletrace.request.status"] == "upstream_broken" and len(work) == 1


async def test_a_plain_answer_arriving_in_pieces_is_read_whole_before_energy_is_added(
    upstream: tuple[Upstream, AnyProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, tap = upstream
    url = f"http://127.0.0.1:{tap.port}/v1/completions"
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json={"prompt": "x", "pieces": True}) as r:
            doc = await r.json()
        assert len(doc["choices"][0]["text"]) == 100_000 and doc["energy"]["final"] is False
        monkeypatch.setattr("sidecar.proxy.completion.MAX_JSON_ANSWER_BYTES", 50_000)
        async with s.post(url, json={"prompt": "x", "pieces": True}) as r:
            doc = await r.json()  # too large to hold: passed through whole, without energy
        assert len(doc["choices"][0]["text"]) == 100_000 and "energy" not in doc
    assert tap.stats().events[("proxy", "answer_too_large")] == 1


def test_a_bad_upstream_url_or_a_taken_port_names_the_knob() -> None:
    with pytest.raises(ConfigError, match="proxy_upstream"):
        start_tap("localhost:8000")
    first = start_tap("http://127.0.0.1:1")
    second = ProxyTap("http://127.0.0.1:1", prices=lambda: PRICES, record_base=str, port=first.port)
    try:
        assert second.knob == "proxy_port"
        with pytest.raises(ConfigError, match="proxy_port"):
            second.start()
        second.stop()  # safe after a failed start
        assert second.due(0.0) == ([], [])
    finally:
        first.stop()


class ClosingUpstream:
    """HTTP/1.1 by hand, as an engine that answers a bad request with a 500 and then closes: here the
    close comes as the next request arrives on that kept-alive connection (the race the probe hit),
    so the proxy's pooled connection fails under a good request without an answer."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.served = 0

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        doomed = False
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if doomed:  # closed under the request that came after the 500: no answer
                    return
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                body = await reader.readexactly(length)
                if b'"bad"' in body:
                    writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 5\r\n\r\nerror")
                    doomed = True
                else:
                    doc = (
                        b'{"choices": [{"text": "w"}], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}'
                    )
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                        % (len(doc), doc)
                    )
                    self.served += 1
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}"


async def test_a_good_request_after_an_engine_closed_its_kept_alive_connection_is_sent_again(
    mode: str,
) -> None:
    """Probe 10: uvicorn answered a bad body with a 500, then closed the connection without saying so;
    the proxy sent the next client's good request on it and answered 502 (5 of 10)."""
    up = ClosingUpstream()
    tap = start_tap(await up.start(), mode)
    url = f"http://127.0.0.1:{tap.port}/v1/completions"
    try:
        statuses = []
        async with aiohttp.ClientSession() as s:
            for body in ({"model": "m", "prompt": "bad"}, {"model": "m", "prompt": "good"}) * 3:
                async with s.post(url, json=body) as r:
                    statuses.append(r.status)
        assert statuses == [500, 200] * 3 and up.served == 3
        counts = tap.stats().events
        assert counts[("proxy", "upstream_retried")] == 3 and ("proxy", "upstream_down") not in counts
    finally:
        tap.stop()
        assert up.server is not None
        up.server.close()
