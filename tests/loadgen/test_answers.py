"""Hostile answers (``loadgen/answers.py``, ``loadgen/client.py``): each a counted failure of its own
request, never a crash of the run or a wrong count, over real HTTP (aiohttp)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from loadgen.client import ERROR_BYTES, probe_server, send
from loadgen.errors import UnreachableError
from loadgen.records import Request, Result
from loadgen.tracing import ClientTracer
from tests.loadgen.fake_server import serving

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GOOD = [
    {"id": "c-1", "choices": [{"index": 0, "delta": {"content": "a"}}]},
    {"id": "c-1", "choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": "length"}]},
    {"id": "c-1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}},
]


def _chat(rid: str, stream: bool = True) -> Request:
    body = {"model": "m", "messages": [], "max_tokens": 8, "stream": stream}
    return Request(id=rid, task="gpqa", api="chat", path="/v1/chat/completions", body=body)


def _image(rid: str) -> Request:
    body = {"prompt": "a cat", "n": 1}
    path = "/v1/images/generations"
    return Request(id=rid, task="text-to-image", api="images", path=path, body=body, unit="image", units=1.0)


def _sse(chunks: list[Any], done: bool = True) -> bytes:
    lines = [b"data: " + (c if isinstance(c, bytes) else json.dumps(c).encode()) + b"\n\n" for c in chunks]
    return b"".join(lines) + (b"data: [DONE]\n\n" if done else b"")


def _body(raw: bytes, status: int = 200, kind: str = "text/event-stream") -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(body=raw, status=status, content_type=kind)

    return answer


async def _send_all(handler: Handler, requests: list[Request], timeout_s: float = 10.0) -> list[Result]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    app.router.add_post("/v1/images/generations", handler)
    async with serving(app) as url, aiohttp.ClientSession() as session:
        t0, tracer = time.perf_counter(), ClientTracer(None)
        return [await send(session, url, Result(r, 0.0), t0, tracer, timeout_s) for r in requests]


def _one(handler: Handler, request: Request) -> Result:
    return asyncio.run(_send_all(handler, [request]))[0]


BAD_STREAMS = {
    "a chunk that is a list": _sse([[1]]),
    "a chunk that is a string": _sse(['"x"']),
    "choices a string": _sse([{"choices": "abc"}]),
    "usage a list": _sse([*GOOD[:2], {"choices": [], "usage": [2]}]),
    "completion_tokens Infinity": _sse([*GOOD[:2], b'{"choices":[],"usage":{"completion_tokens":Infinity}}']),
    "completion_tokens -7": _sse([*GOOD[:2], {"choices": [], "usage": {"completion_tokens": -7}}]),
    "completion_tokens 1e30": _sse([*GOOD[:2], {"choices": [], "usage": {"completion_tokens": 10**30}}]),
    "completion_tokens true": _sse([*GOOD[:2], {"choices": [], "usage": {"completion_tokens": True}}]),
    "more tokens than max_tokens": _sse([*GOOD[:2], {"choices": [], "usage": {"completion_tokens": 9}}]),
    "an error in the stream": _sse([GOOD[0], {"error": {"message": "engine died"}}]),
    "cut before a finish": _sse(GOOD[:1], done=False),
    "a 200 HTML page": b"<html><body>maintenance</body></html>",
    "a line over 512 KiB": b"data: " + b"x" * (600 << 10) + b"\n\n",
}


@pytest.mark.parametrize("name", BAD_STREAMS)
def test_a_stream_that_cannot_be_right_fails_its_request_alone(name: str) -> None:
    bad = _body(BAD_STREAMS[name])
    good = _body(_sse(GOOD))

    async def answer(request: web.Request) -> web.StreamResponse:
        return await (bad if request.headers["X-Request-Id"] == "bad" else good)(request)

    results = asyncio.run(_send_all(answer, [_chat("bad"), _chat("good")]))
    assert results[0].error is not None and not results[0].ok, results[0]
    assert results[1].ok and results[1].output_tokens == 2 and results[1].prompt_tokens == 5


def test_a_usage_without_completion_tokens_keeps_the_chunks_counted() -> None:
    raw = _sse([*GOOD[:2], {"choices": [], "usage": {"prompt_tokens": 5}}])
    res = _one(_body(raw), _chat("r"))
    assert res.ok and res.output_tokens == 2 and res.prompt_tokens == 5


def test_a_stream_that_ends_on_its_finish_reason_without_done_is_whole() -> None:
    res = _one(_body(_sse(GOOD, done=False)), _chat("r"))  # transformers serve sends no [DONE]
    assert res.ok and res.output_tokens == 2 and res.finish_reason == "length"


BAD_JSON = {
    "an error object": {"error": {"message": "out of memory"}},
    "no items": {"data": []},
    "1000 items for 1": {"data": [{"b64_json": ""}] * 1000},
    "a list": [1, 2],
}


@pytest.mark.parametrize("name", BAD_JSON)
def test_a_diffusion_answer_that_cannot_be_right_fails_its_request(name: str) -> None:
    res = _one(_body(json.dumps(BAD_JSON[name]).encode(), kind="application/json"), _image("r"))
    assert res.error is not None and res.output_units == 0.0


def test_a_non_streamed_answer_with_a_forged_count_fails_its_request() -> None:
    raw = json.dumps({"choices": [{"message": {}}], "usage": {"completion_tokens": -3}}).encode()
    res = _one(_body(raw, kind="application/json"), _chat("r", stream=False))
    assert res.error is not None and "completion_tokens" in res.error


def test_an_endless_error_page_is_read_only_so_far() -> None:
    """Before: the whole page was read (a 256 MiB 500 page took the client's RSS to 562 MB), here
    one that never ends would have held the request to its timeout."""

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=500)
        await resp.prepare(request)
        while True:
            await resp.write(b"e" * ERROR_BYTES)
            await asyncio.sleep(0.01)

    res = asyncio.run(_send_all(endless, [_chat("r")], timeout_s=5.0))[0]
    assert res.error is not None and res.error.startswith("HTTP 500: eee") and len(res.error) <= 320


@pytest.mark.parametrize("answer", [b"[1, 2]", b'{"data": "none"}', b"<html>"])
def test_a_model_list_that_is_not_one_is_a_one_line_error(answer: bytes) -> None:
    async def models(request: web.Request) -> web.Response:
        return web.Response(body=answer, content_type="application/json")

    async def probe() -> None:
        app = web.Application()
        app.router.add_get("/v1/models", models)
        async with serving(app) as url, aiohttp.ClientSession() as session:
            await probe_server(session, url, "--server-url")

    with pytest.raises(UnreachableError, match="--server-url"):
        asyncio.run(probe())
