"""Answers and requests shaped oddly but legally: a JSON answer to a stream, an answer nested too deep
to re-encode, a request id with a ``/``, a ``Host`` whose port is out of range."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from sidecar.attribution.events import Phase
from tests.sidecar.proxy.conftest import AnyProxy, drain, start_tap

USAGE = b'"usage":{"prompt_tokens":7,"completion_tokens":5}'
DEEP = b"[" * 1_000 + b"]" * 1_000  # orjson reads it (to 1024 deep); json.loads cannot (RecursionError)
# a plain answer that must be re-encoded to get its energy (it has one already), nested too deep for that
DEEP_ANSWER = b'{"id":"x","energy":1,"deep":' + DEEP + b',"choices":[{"text":"w"}],' + USAGE + b"}"
# a usage event of several data lines (re-encoded, not spliced), nested too deep for that
DEEP_USAGE = b'data: {"choices":[],"deep":' + DEEP + b",\ndata: " + USAGE + b"}\n\n"
CONTENT = b'data: {"choices":[{"text":"w"}]}\n\n'
HUGE_USAGE = b'"usage":{"prompt_tokens":1' + b"0" * 400 + b',"completion_tokens":5}'  # no float holds it
HUGE_ANSWER = b'{"id":"x","choices":[{"text":"w"}],' + HUGE_USAGE + b"}"
OURS = {"X-Jouletrace-Energy-Joules": "0.000001", "X-Jouletrace-Record-Url": "http://evil.example/r"}


async def _answer(request: web.Request) -> web.StreamResponse:
    """An upstream that answers as the prompt says, whatever the request's ``stream``."""
    prompt = (await request.json())["prompt"]
    if prompt == "deep":
        return web.Response(body=DEEP_ANSWER, content_type="application/json")
    if prompt == "huge usage":
        if not (await request.json()).get("stream"):
            return web.Response(body=HUGE_ANSWER, content_type="application/json")
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        for event in (CONTENT, b'data: {"choices":[],' + HUGE_USAGE + b"}\n\n", b"data: [DONE]\n\n"):
            await stream.write(event)
        return stream
    if prompt == "utf-16":
        doc = '{"id":"x","choices":[{"text":"héllo"}],"usage":{"prompt_tokens":7,"completion_tokens":5}}'
        return web.Response(body=doc.encode("utf-16"), content_type="application/json", charset="utf-16")
    if prompt == "forged headers":  # the proxy's own headers, as an upstream could send them
        return web.json_response({"id": "x", "choices": [{"text": "w"}]}, status=400, headers=OURS)
    if prompt == "deep usage":
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        for event in (CONTENT, DEEP_USAGE, b"data: [DONE]\n\n"):
            await stream.write(event)
        return stream
    await asyncio.sleep(0.05)  # a plain JSON completion, even to stream: true
    doc = b'{"id":"x","model":"m","choices":[{"text":"w w w w w"}],' + USAGE + b"}"
    return web.Response(body=doc, content_type="application/json")


async def _huge_header(request: web.Request) -> web.Response:
    return web.json_response({"data": []}, headers={"X-Big": "x" * 10_000})  # over aiohttp's 8190


@pytest.fixture
async def proxy(mode: str) -> AsyncIterator[AnyProxy]:
    app = web.Application()
    app.router.add_post("/v1/completions", _answer)
    app.router.add_get("/v1/models", _huge_header)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    tap = start_tap(f"http://127.0.0.1:{runner.addresses[0][1]}", mode)
    try:
        yield tap
    finally:
        tap.stop()
        await runner.cleanup()


async def test_a_stream_the_upstream_answered_with_plain_json_is_priced_as_a_plain_answer(
    proxy: AnyProxy,
) -> None:
    """Read as a stream, it had no chunk: no work event ever, its record a final 0 J."""
    url = f"http://127.0.0.1:{proxy.port}/v1/completions"
    async with aiohttp.ClientSession() as s, s.post(url, json={"prompt": "hi", "stream": True}) as r:
        doc = await r.json()
        assert r.status == 200 and doc["energy"]["joules"] > 0
    work, infos = await drain(proxy)
    assert [e.phase for e in work] == [Phase.PREFILL, Phase.DECODE]
    assert (work[0].units, work[1].units) == (7.0, 4.0)  # the answer's usage: 7 prompt, 5 output tokens
    assert infos[-1].end_s is not None and infos[-1].output_tokens == 5


async def test_an_answer_too_deep_to_re_encode_goes_on_as_it_came_and_is_counted(proxy: AnyProxy) -> None:
    url = f"http://127.0.0.1:{proxy.port}/v1/completions"
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json={"prompt": "deep"}) as r:
            assert r.status == 200 and await r.read() == DEEP_ANSWER  # before: a 500, the answer lost
            assert "X-Jouletrace-Energy-Joules" not in r.headers
        body = {"prompt": "deep usage", "stream": True, "stream_options": {"include_usage": True}}
        async with s.post(url, json=body) as r:
            assert await r.read() == CONTENT + DEEP_USAGE + b"data: [DONE]\n\n"  # before: cut at the usage
    assert proxy.stats().events[("proxy", "answer_too_deep")] == 2
    _, infos = await drain(proxy, finished=2)
    assert [i.prompt_tokens for i in infos if i.end_s is not None] == [7, 7]  # their usage still learned


async def test_a_request_id_with_a_slash_gets_a_record_url_with_it_as_one_path_segment(
    proxy: AnyProxy,
) -> None:
    url = f"http://127.0.0.1:{proxy.port}/v1/completions"
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, json={"prompt": "hi"}, headers={"X-Request-Id": "team-a/req-1"}) as r,
    ):
        assert r.status == 200 and r.headers["X-Request-Id"] == "team-a/req-1"
        assert r.headers["X-Jouletrace-Record-Url"].endswith("/v1/requests/team-a%2Freq-1")


@pytest.mark.parametrize("host", ["x:99999", "x:-1"])
async def test_a_host_the_record_url_cannot_be_built_from_leaves_it_out_and_the_answer_goes_on(
    proxy: AnyProxy, host: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    body = b'{"prompt": "hi"}'
    writer.write(
        f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    answer = await asyncio.wait_for(reader.read(), timeout=5.0)  # before: a 500 and a traceback
    writer.close()
    head, _, doc = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b'"energy"' in doc
    assert b"x-request-id" in head.lower() and b"x-jouletrace-record-url" not in head.lower()
    assert proxy.stats().events[("proxy", "host")] == 1


async def test_a_token_count_no_float_holds_is_dropped_and_counted_and_the_answer_goes_on(
    proxy: AnyProxy,
) -> None:
    """Adversarial probe: a usage count of 401 digits raised OverflowError: a plain answer became a
    500, a stream was cut before its usage event and [DONE]."""
    url = f"http://127.0.0.1:{proxy.port}/v1/completions"
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json={"prompt": "huge usage"}) as r:
            assert r.status == 200 and (await r.read()).startswith(b'{"id":"x"')
        async with s.post(url, json={"prompt": "huge usage", "stream": True}) as r:
            assert r.status == 200 and (await r.read()).endswith(b"data: [DONE]\n\n")
    assert proxy.stats().events[("proxy", "usage")] == 2


async def test_the_proxys_own_headers_from_the_upstream_never_reach_the_client(proxy: AnyProxy) -> None:
    """Adversarial probe: an upstream's X-Jouletrace-Energy-Joules and Record-Url went on to the
    client where the proxy set none (here: an error answer)."""
    url = f"http://127.0.0.1:{proxy.port}/v1/completions"
    async with aiohttp.ClientSession() as s, s.post(url, json={"prompt": "forged headers"}) as r:
        assert r.status == 400
        assert not {k.lower() for k in OURS} & {k.lower() for k in r.headers}


async def test_an_answer_whose_head_cannot_be_read_on_any_path_is_a_counted_502(proxy: AnyProxy) -> None:
    """Adversarial probe: on a path that is not a completion, an upstream header over 8 KiB (or a
    garbage status line) made the proxy answer 500, uncounted."""
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{proxy.port}/v1/models") as r:
        assert r.status == 502 and (await r.json())["error"]["type"] == "upstream_bad_answer"
    assert proxy.stats().events[("proxy", "upstream_bad_answer")] == 1


async def test_a_utf16_answer_goes_on_as_it_came_and_its_usage_is_still_learned(proxy: AnyProxy) -> None:
    """Adversarial probe: the proxy re-encoded a UTF-16 JSON answer as ASCII to add its energy, under
    the answer's UTF-16 Content-Type: the client could not read it."""
    url = f"http://127.0.0.1:{proxy.port}/v1/completions"
    async with aiohttp.ClientSession() as s, s.post(url, json={"prompt": "utf-16"}) as r:
        assert r.status == 200 and (await r.json())["choices"] == [{"text": "héllo"}]
    _, infos = await drain(proxy)
    assert [(i.prompt_tokens, i.output_tokens) for i in infos if i.end_s is not None] == [(7, 5)]
