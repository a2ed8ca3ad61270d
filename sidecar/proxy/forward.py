"""The proxy's HTTP side: every request forwarded to the upstream, completions learned from.

One catch-all route forwards any method and path to ``upstream`` + path (query
included) and relays the answer: status, headers (less hop-by-hop ones), body.
Completions (``/v1/chat/completions``, ``/v1/completions``) go through
:mod:`.completion`, which learns from them and adds ``X-Request-Id``,
``X-Jouletrace-Record-Url`` and the ``energy`` object; the rest is relayed here.

Faults: an unreachable upstream is a 502 with a JSON error body (counted
``upstream_down``); an upstream that breaks off mid-answer cuts the client off
too (``upstream_broken``); a body over ``max_body_bytes`` is a 413
(``too_large``); a client that goes away mid-stream closes the upstream
connection, so the engine aborts the request (``disconnected``).
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from sidecar.proxy.completion import completion
from sidecar.proxy.learn import COMPLETION_PATHS
from sidecar.proxy.upstream import HOP, ProxyContext, cut_off, error, forward_headers, open_upstream

__all__ = ["make_proxy_app"]


def make_proxy_app(ctx: ProxyContext, max_body_bytes: int) -> web.Application:
    """The aiohttp app that forwards everything to ``ctx.upstream``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            ctx.counts.add("too_large")
            return error(
                413,
                f"request body over the proxy's limit of {max_body_bytes} bytes (knob proxy_max_body_bytes)",
                "request_too_large",
            )
        if request.path in COMPLETION_PATHS and request.method == "POST":
            return await completion(ctx, request, body)
        return await _plain(ctx, request, body)

    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _plain(ctx: ProxyContext, request: web.Request, body: bytes) -> web.StreamResponse:
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
