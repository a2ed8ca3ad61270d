"""The proxy's HTTP side: every request forwarded to the upstream, completions learned from.

One handler (aiohttp's low-level server: no router) forwards any method and path
to ``upstream`` + path (query included) and relays the answer: status, headers
(less hop-by-hop ones), body.
Completions (``/v1/chat/completions``, ``/v1/completions``) go through
:mod:`.completion`, which learns from them and adds ``X-Request-Id``,
``X-Jouletrace-Record-Url`` and the ``energy`` object; the rest is relayed here.

Faults: an unreachable upstream is a 502 with a JSON error body (counted
``upstream_down``); an upstream that breaks off mid-answer cuts the client off
too (``upstream_broken``); a body over ``max_body_bytes`` is a 413 (``too_large``), at once
when its declared length says so (nothing read, nothing held); bodies held at once are bounded
too (:data:`BODIES_HELD_BYTES`: 60 clients sending 7 MB bodies together grew the proxy to
853 MB), a request beyond it answered ``503`` (retryable; ``bodies_over_budget``) unless it is
the only one. A body counts as held as it is read, not as declared (one client declaring
100 GB and sending a byte at a time made every other request a 503), and it must arrive within
:data:`BODY_READ_TIMEOUT_S`, else a 408 and the connection closed (``body_timeout``): a slow
client holds at most what it sent, for that long. A client that goes away mid-stream closes
the upstream connection, so the engine aborts the request (``disconnected``).
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
from sidecar.proxy.upstream import (
    ANSWER_DROP,
    HOP,
    ProxyContext,
    cut_off,
    error,
    forward_headers,
    open_upstream,
)

__all__ = ["BODIES_HELD_BYTES", "BODY_READ_TIMEOUT_S", "make_proxy_server"]

BODIES_HELD_BYTES = 64 << 20  # request bodies the proxy holds at once (each until its answer ends)
BODY_READ_TIMEOUT_S = 60.0  # a request's whole body arrives within this, or the request gets a 408


def make_proxy_server(ctx: ProxyContext, max_body_bytes: int, **kwargs: Any) -> web.Server:
    """aiohttp's low-level server forwarding everything to ``ctx.upstream`` (``kwargs``: the
    :class:`~aiohttp.web.Server`'s own). Low-level: one handler for every method and path, so no
    router, no application, no middleware chain per request; on the running loop."""

    held = [0]  # bytes of request bodies read and not yet answered, all requests together

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        declared = request.content_length
        if declared is not None and declared > max_body_bytes:  # refused before a byte is read
            return _too_large(ctx, max_body_bytes)
        if request.headers.get(hdrs.EXPECT):  # as aiohttp's application: an empty one is none
            await _expect(request)
        mine = [0]  # bytes of this request's body held
        try:
            try:
                async with asyncio.timeout(BODY_READ_TIMEOUT_S):
                    body = await _read_body(ctx, request, held, mine, max_body_bytes)
            except TimeoutError:
                return await _slow_body(ctx, request)
            if isinstance(body, web.Response):
                return body
            if request.method == "POST" and request.path in COMPLETION_PATHS:
                return await completion(ctx, request, body)
            return await _plain(ctx, request, body)
        finally:
            held[0] -= mine[0]

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


async def _read_body(
    ctx: ProxyContext, request: web.BaseRequest, held: list[int], mine: list[int], max_body_bytes: int
) -> bytes | web.Response:
    """The request's body, or the 413 / 503 that refuses it. Each piece counts as held (``held``:
    every request's bytes, ``mine``: this one's) once it is read, not when a length is declared: a
    client that declares 8 MiB and sends nothing holds nothing. A piece is refused for the budget
    only while others hold bodies too: one request alone is always taken (whatever its size under
    ``max_body_bytes``); a request without a body is never refused."""
    body = bytearray()
    while piece := await request.content.readany():
        if len(body) + len(piece) > max_body_bytes:  # a body sent without a length, or longer than said
            return _too_large(ctx, max_body_bytes)
        if held[0] > mine[0] and held[0] + len(piece) > BODIES_HELD_BYTES:
            return _busy(ctx)
        held[0] += len(piece)
        mine[0] += len(piece)
        body += piece
    return bytes(body)


def _too_large(ctx: ProxyContext, max_body_bytes: int) -> web.Response:
    ctx.counts.add("too_large")
    return error(
        413,
        f"request body over the proxy's limit of {max_body_bytes} bytes (knob proxy_max_body_bytes)",
        "request_too_large",
    )


async def _slow_body(ctx: ProxyContext, request: web.BaseRequest) -> web.StreamResponse:
    """A 408, then the connection closed: aiohttp would otherwise go on reading the rest of the
    body, discarded, for its lingering time (10 s) before it closed it."""
    ctx.counts.add("body_timeout")
    message = f"request body not received within {BODY_READ_TIMEOUT_S:g} s"
    response = error(408, message, "request_body_timeout")
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response


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
        response.headers.extend(forward_headers(upstream.headers, ANSWER_DROP))
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
