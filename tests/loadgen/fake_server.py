"""A fast fake OpenAI-compatible server (aiohttp) for the loadgen's tests and rate benchmark.

It streams exactly ``max_tokens`` tokens (as vLLM does with ``ignore_eos``), one SSE
chunk per token, ``token_s`` apart, with at most ``batch_cap`` requests decoding at
once (the rest queue, like a server's batch cap). It also answers ``/v1/models``,
``/tokenize`` (1 token per word, plus 3 per chat message and 2 for the answer's header),
the diffusion endpoints, and fails on purpose:
a prompt containing ``FAIL`` gets HTTP 500, ``HANG`` never answers, the first ``DROP``
has its connection closed unanswered. Every request's
headers are kept in ``seen`` so tests can check ``X-Request-Id`` and ``traceparent``.

Run it alone: ``python -m tests.loadgen.fake_server --port 8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["FakeServer", "serving"]


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a free 127.0.0.1 port for the block; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@dataclass
class FakeServer:
    """The fake server's behaviour; ``start()`` binds it, ``url`` is its base URL."""

    token_s: float = 0.001
    batch_cap: int = 64
    model: str = "fake-llm"
    max_model_len: int = 4096
    tokenize: bool = True
    seen: list[dict[str, Any]] = field(default_factory=list)
    dropped: bool = False
    url: str = ""
    _runner: web.AppRunner | None = None
    _gate: asyncio.Semaphore | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._llm)
        app.router.add_post("/v1/completions", self._llm)
        app.router.add_post("/v1/images/generations", self._diffusion)
        app.router.add_post("/v1/videos/generations", self._diffusion)
        if self.tokenize:
            app.router.add_post("/tokenize", self._tokenize)
        app.router.add_get("/_arrivals", self._arrivals)
        app.router.add_post("/_reset", self._reset)
        return app

    async def _arrivals(self, request: web.Request) -> web.Response:
        """Arrival times (``time.perf_counter``, CLOCK_MONOTONIC: comparable across processes)."""
        return web.json_response({"t": [s["t"] for s in self.seen]})

    async def _reset(self, request: web.Request) -> web.Response:
        self.seen.clear()
        return web.json_response({"ok": True})

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._gate = asyncio.Semaphore(self.batch_cap)
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": self.model, "object": "model", "max_model_len": self.max_model_len}],
            }
        )

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        count = len(str(body.get("prompt", "")).split())
        for m in body.get("messages") or []:  # a fake chat template: 3 tokens per message, 2 to answer
            count += 3 + len(str(m.get("content", "")).split())
        count += 2 if body.get("messages") else 0
        return web.json_response({"count": count, "max_model_len": self.max_model_len})

    def _note(self, request: web.Request, body: dict[str, Any], t: float | None = None) -> None:
        self.seen.append(
            {
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "path": request.path,
                "body": body,
                "t": t if t is not None else time.perf_counter(),
            }
        )

    async def _llm(self, request: web.Request) -> web.StreamResponse:
        arrived = time.perf_counter()
        body = await request.json()
        self._note(request, body, arrived)
        text = json.dumps(body.get("messages") or body.get("prompt"))
        if "FAIL" in text:
            return web.json_response({"error": {"message": "injected failure"}}, status=500)
        if "HANG" in text:
            await asyncio.sleep(3600)
        if "DROP" in text and not self.dropped:  # close the connection unanswered, once
            self.dropped = True
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        n = int(body.get("max_tokens") or 16)
        prompt_tokens = len(text.split())
        chat = request.path.endswith("chat/completions")
        rid = ("chatcmpl-" if chat else "cmpl-") + request.headers.get("X-Request-Id", "x")
        assert self._gate is not None
        async with self._gate:
            if not body.get("stream"):
                await asyncio.sleep(self.token_s * n)
                return web.json_response(
                    {
                        "id": rid,
                        "choices": [{"index": 0, "text": "w " * n, "finish_reason": "length"}],
                        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n},
                    }
                )
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for i in range(n):
                if self.token_s:
                    await asyncio.sleep(self.token_s)
                piece: dict[str, Any] = {"delta": {"content": "w "}} if chat else {"text": "w "}
                piece |= {"index": 0, "finish_reason": "length" if i == n - 1 else None}
                await resp.write(b"data: " + json.dumps({"id": rid, "choices": [piece]}).encode() + b"\n\n")
            usage = {
                "id": rid,
                "choices": [],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n},
            }
            await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
            await resp.write_eof()
            return resp

    async def _diffusion(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._note(request, body)
        await asyncio.sleep(self.token_s * int(body.get("steps", 1)))
        return web.json_response(
            {"created": int(time.time()), "data": [{"b64_json": "AAAA"}] * int(body.get("n", 1))}
        )


async def _main(port: int, token_s: float) -> None:
    server = FakeServer(token_s=token_s, batch_cap=4096)
    print(await server.start(port=port), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--token-s", type=float, default=0.0)
    a = ap.parse_args()
    asyncio.run(_main(a.port, a.token_s))
