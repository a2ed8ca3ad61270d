"""The proxy's HTTP side: every request forwarded to the upstream, completions learned from.

One handler (aiohttp's low-level server: no router) forwards any method and path
to ``upstream`` + path (query included) and relays the answer: status, headers
(less hop-by-hop ones), body.
Completions (``/v1/chat/completions``, ``/v1/completions``) go through
:mod:`.completion`, which learns from them and adds ``X-Request-Id``,
``X-Jouletrace-Record-Url`` and the ``energy`` object; the rest is relayed here.

Faults: an unreachable upstream is a 502 with a JSON error body (counted
``upstream_down``); an upstream that breaks off mid-answer cuts the client off
too (``upstream_broken``); a body over ``max_body_bytes`` is a 413
(``too_large``); bodies held at once are bounded too (:data:`BODIES_HELD_BYTES`: 60 clients
sending 7 MB bodies together grew the proxy to 853 MB), a request beyond it answered ``503``
(retryable; ``bodies_over_budget``) unless it is the only one; a client that goes away mid-stream
closes the upstream connection, so the engine aborts the request (``disconnected``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from sidecar.contracts.proxy_wire import COMPLETION_PATHS
from sidecar.proxy.completion import completion
from sidecar.proxy.upstream import HOP, ProxyContext, cut_off, error, forward_headers, open_upstream

__all__ = ["BODIES_HELD_BYTES", "make_proxy_server"]

BODIES_HELD_BYTES = 64 << 20  # request bodies the proxy holds at once (each until its answer ends)


def make_proxy_server(ctx: ProxyContext, max_body_bytes: int, **kwargs: Any) -> web.Server:
    """aiohttp's low-level server forwarding everything to ``ctx.upstream`` (``kwargs``: the
    :class:`~aiohttp.web.Server`'s own). Low-level: one handler for every method and path, so no
    router, no application, no middleware chain per request; on the running loop."""

    held = [0]  # bytes of the bodies of the requests being handled

    def over_budget(size: int) -> bool:
        return held[0] > 0 and held[0] + size > BODIES_HELD_BYTES

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.headers.get(hdrs.EXPECT):  # as aiohttp's application: an empty one is none
            await _expect(request)
        reserved = request.content_length or 0  # taken before the body is read: reads run at once
        if over_budget(reserved):
            return _busy(ctx)
        held[0] += reserved
        try:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return _too_large(ctx, max_body_bytes)
            extra = len(body) - reserved  # a body sent without a length: held from now on
            if extra > 0:
                if over_budget(extra):
                    return _busy(ctx)
                held[0] += extra
                reserved += extra
            if request.method == "POST" and request.path in COMPLETION_PATHS:
                return await completion(ctx, request, body)
            return await _plain(ctx, request, body)
        finally:
            held[0] -= reserved

    def make_request(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        loop = asyncio.get_running_loop()
        return web.BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=max_body_bytes)

    return web.Server(handle, request_factory=make_request, **kwargs)


def _too_large(ctx: ProxyContext, max_body_bytes: int) -> web.Response:
    ctx.counts.add("too_large")
    return error(
        413,
        f"request body over the proxy's limit of {max_body_bytes} bytes (knob proxy_max_body_bytes)",
        "request_too_large",
    )


def _busy(ctx: ProxyContext) -> web.Response:
    ctx.counts.add("bodies_over_budget")
    return error(
        503, f"the proxy holds {BODIES_HELD_BYTES >> 20} MiB of request bodies already; retry", "proxy_busy"
    )


async def _expect(request: web.BaseRequest) -> None:
    """``Expect: 100-continue`` answered before the body is read (417 for any other expectation),
    as aiohttp's application does: a client that waits for it (curl, for a body over 1 KiB) sends on."""
    expect = request.headers[hdrs.EXPECT]
    if request.version != aiohttp.HttpVersion11:
        return
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer's own body has not begun


async def _plain(ctx: ProxyContext, request: web.BaseRequest, body: bytes) -> web.StreamResponse:
    """Anything but a completion: relayed byte for byte."""
    upstream = await open_upstream(ctx, request, body, forward_headers(request.headers, HOP))
    if isinstance(upstream, web.Response):
        return upstream
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    try:
        response.headers.extend(forward_headers(upstream.headers, HOP))
        await response.prepare(request)
        async for piece in upstream.content.iter_any():
            await response.write(piece)
        await response.write_eof()
        return response
    except (ConnectionError, asyncio.CancelledError):
        ctx.counts.add("disconnected")
        raise
    except aiohttp.ClientError:
        return cut_off(ctx, request, response.prepared)
    finally:
        upstream.close()
