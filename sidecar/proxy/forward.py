"""The proxy's HTTP side: every request forwarded to the upstream, completions learned from.

One catch-all route forwards any method and path to ``upstream`` + path (query
included) and relays the answer: status, headers (less hop-by-hop ones), body.
Completions (``/v1/chat/completions``, ``/v1/completions``) are also learned
from (:mod:`.learn`, :mod:`.relay`) and answered with ``X-Request-Id`` and
``X-Jouletrace-Record-Url``; a streamed body is relayed event by event as it
arrives, a plain JSON one gets an ``energy`` object (and an
``X-Jouletrace-Energy-Joules`` header) once it is complete.

Faults: an unreachable upstream is a 502 with a JSON error body (counted
``upstream_down``); an upstream that breaks off mid-answer cuts the client off
too (``upstream_broken``); a body over ``max_body_bytes`` is a 413
(``too_large``); a client that goes away mid-stream closes the upstream
connection, so the engine aborts the request (``disconnected``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from sidecar.proxy.learn import (
    COMPLETION_PATHS,
    BodyFacts,
    Rejections,
    RequestTrace,
    clean_label,
    clean_traceparent,
    inspect_body,
    new_request_id,
    usage_tokens,
)
from sidecar.proxy.relay import StreamRelay
from sidecar.proxy.sse import SseFramer

__all__ = ["ProxyContext", "make_proxy_app"]

REQUEST_ID = "X-Request-Id"
RECORD_URL = "X-Jouletrace-Record-Url"
ENERGY_HEADER = "X-Jouletrace-Energy-Joules"
TASK_HEADER = "X-Jouletrace-Task"
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
_MAX_JSON_ANSWER_BYTES = 64 << 20  # a plain completion answer read whole to add energy; more passes raw


@dataclass(slots=True)
class ProxyContext:
    """What the handler needs: where to forward, how to learn, what to count."""

    upstream: str  # base URL, no trailing slash
    clock: Callable[[], float]
    begin: Callable[[RequestTrace], str]  # registers a trace; returns its (possibly new) id
    energy: Callable[[RequestTrace], dict[str, Any]]
    record_url: Callable[[web.Request, str], str]
    counts: Rejections
    tenant_header: str = ""
    session: aiohttp.ClientSession | None = None
    in_flight: int = 0


def _forward_headers(headers: Any, drop: set[str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        if key.lower() not in drop:
            out.add(key, value)
    return out


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status)


def _cut_off(ctx: ProxyContext, request: web.Request, answered: bool) -> web.StreamResponse:
    """The upstream broke off mid-answer (counted ``upstream_broken``): a 502 if the client has
    had nothing yet, else its connection is cut too, so it sees a truncated answer, not a clean end."""
    ctx.counts.add("upstream_broken")
    if not answered:
        return _error(502, f"upstream {ctx.upstream} broke off its answer", "upstream_broken")
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=502)  # never sent: the connection is closed


def make_proxy_app(ctx: ProxyContext, max_body_bytes: int) -> web.Application:
    """The aiohttp app that forwards everything to ``ctx.upstream``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            ctx.counts.add("too_large")
            return _error(
                413,
                f"request body over the proxy's limit of {max_body_bytes} bytes (knob proxy_max_body_bytes)",
                "request_too_large",
            )
        if request.path in COMPLETION_PATHS and request.method == "POST":
            return await _completion(ctx, request, body)
        return await _plain(ctx, request, body)

    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _open(
    ctx: ProxyContext, request: web.Request, body: bytes, headers: CIMultiDict[str]
) -> aiohttp.ClientResponse | web.Response:
    assert ctx.session is not None
    url = ctx.upstream + request.rel_url.raw_path_qs
    try:
        return await ctx.session.request(
            request.method, url, headers=headers, data=body or None, allow_redirects=False
        )
    except (TimeoutError, aiohttp.ClientConnectionError, OSError) as err:
        ctx.counts.add("upstream_down")
        return _error(
            502, f"upstream {ctx.upstream} unreachable: {type(err).__name__}: {err}", "upstream_unavailable"
        )


async def _plain(ctx: ProxyContext, request: web.Request, body: bytes) -> web.StreamResponse:
    """Anything but a completion: relayed byte for byte."""
    upstream = await _open(ctx, request, body, _forward_headers(request.headers, _HOP))
    if isinstance(upstream, web.Response):
        return upstream
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    try:
        response.headers.extend(_forward_headers(upstream.headers, _HOP))
        await response.prepare(request)
        async for piece in upstream.content.iter_any():
            await response.write(piece)
        await response.write_eof()
        return response
    except (ConnectionError, asyncio.CancelledError):
        ctx.counts.add("disconnected")
        raise
    except aiohttp.ClientError:
        return _cut_off(ctx, request, response.prepared)
    finally:
        upstream.close()


def _trace(ctx: ProxyContext, request: web.Request, facts: BodyFacts) -> RequestTrace:
    counts = ctx.counts
    tenant = None
    if ctx.tenant_header:
        tenant = clean_label(request.headers.get(ctx.tenant_header), "tenant", counts)
    trace = RequestTrace(
        request_id=clean_label(request.headers.get(REQUEST_ID), "request_id", counts) or new_request_id(),
        arrival_s=ctx.clock(),
        path=request.path,
        model=facts.model,
        stream=facts.stream,
        task=clean_label(request.headers.get(TASK_HEADER), "task", counts),
        tenant=tenant or facts.user,
        traceparent=clean_traceparent(request.headers.get("traceparent"), counts),
        prompt_chars=facts.prompt_chars,
    )
    trace.request_id = ctx.begin(trace)
    return trace


async def _completion(ctx: ProxyContext, request: web.Request, body: bytes) -> web.StreamResponse:
    facts = inspect_body(request.path, body, ctx.counts)
    ctx.counts.add("streams" if facts.stream else "completions")
    trace = _trace(ctx, request, facts)
    headers = _forward_headers(request.headers, _HOP | {"accept-encoding", REQUEST_ID.lower()})
    headers[REQUEST_ID] = trace.request_id
    headers["Accept-Encoding"] = "identity"  # the proxy reads completions; no compressed bodies
    ctx.in_flight += 1
    try:
        upstream = await _open(ctx, request, facts.body, headers)
        if isinstance(upstream, web.Response):
            trace.outcome = "upstream_down"
            return upstream
        try:
            trace.status = upstream.status
            return await _answer(ctx, request, upstream, trace, facts)
        finally:
            upstream.close()
    except (ConnectionError, asyncio.CancelledError):
        trace.outcome = "disconnected"
        ctx.counts.add("disconnected")
        raise
    except aiohttp.ClientError:  # the upstream broke off mid-answer (engine crashed, connection cut)
        trace.outcome = "upstream_broken"
        return _cut_off(ctx, request, trace.answered)
    finally:
        ctx.in_flight -= 1
        trace.end_s = ctx.clock()
        trace.done = True


async def _answer(
    ctx: ProxyContext,
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    trace: RequestTrace,
    facts: BodyFacts,
) -> web.StreamResponse:
    if upstream.status >= 400:
        trace.outcome = "error"
    ours = {REQUEST_ID: trace.request_id, RECORD_URL: ctx.record_url(request, trace.request_id)}
    kind = upstream.headers.get("Content-Type", "")
    if kind.startswith("text/event-stream"):
        return await _stream(ctx, request, upstream, trace, facts, ours)
    if kind.startswith("application/json") and upstream.status < 400:
        raw = await upstream.content.read(_MAX_JSON_ANSWER_BYTES)
        return _json_answer(ctx, upstream, trace, raw, ours)
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    response.headers.extend(_forward_headers(upstream.headers, _HOP))
    response.headers.update(ours)
    await response.prepare(request)
    trace.answered = True
    async for piece in upstream.content.iter_any():
        await response.write(piece)
    await response.write_eof()
    return response


def _json_answer(
    ctx: ProxyContext, upstream: aiohttp.ClientResponse, trace: RequestTrace, raw: bytes, ours: dict[str, str]
) -> web.Response:
    headers = _forward_headers(upstream.headers, _HOP)
    headers.update(ours)
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        ctx.counts.add("malformed_json")
        return web.Response(status=upstream.status, body=raw, headers=headers)
    if "usage" in doc:
        trace.usage = usage_tokens(doc["usage"], ctx.counts)
    trace.response_model = clean_label(doc.get("model"), "response_model", ctx.counts)
    share = 1.0 / max(ctx.in_flight, 1)
    trace.shared_s = (ctx.clock() - trace.arrival_s) * share
    trace.shared_steps = (trace.usage[1] if trace.usage else 1) * share
    energy = ctx.energy(trace)
    doc["energy"] = energy
    headers[ENERGY_HEADER] = str(energy["joules"])
    return web.Response(status=upstream.status, body=json.dumps(doc).encode(), headers=headers)


async def _stream(
    ctx: ProxyContext,
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    trace: RequestTrace,
    facts: BodyFacts,
    ours: dict[str, str],
) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    response.headers.extend(_forward_headers(upstream.headers, _HOP))
    response.headers.update(ours)
    await response.prepare(request)
    trace.answered = True
    framer = SseFramer()
    relay = StreamRelay(
        trace,
        strip_usage=facts.asked_usage,
        clock=ctx.clock,
        in_flight=lambda: ctx.in_flight,
        energy=ctx.energy,
        counts=ctx.counts,
    )
    async for piece in upstream.content.iter_any():
        out = b"".join(relay.relay(event) for event in framer.feed(piece))
        if out:
            await response.write(out)
    tail = b"".join(relay.relay(event) for event in framer.close())
    if tail:
        await response.write(tail)
    if framer.oversized:
        ctx.counts.add("malformed_sse")
    await response.write_eof()
    return response
