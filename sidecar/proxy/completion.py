"""A completion through the proxy: learned from, answered with its id, record URL and energy.

The request body is read once (:func:`~sidecar.proxy.learn.inspect_body`), its trace
registered with the tap, the upstream asked (with ``include_usage`` added when a
stream did not ask), and the answer relayed: a stream event by event as it arrives
(:class:`~sidecar.proxy.relay.StreamRelay`), a plain JSON answer with an ``energy``
object and an ``X-Jouletrace-Energy-Joules`` header once it is complete (unless it is
nested too deep for :mod:`json` to re-encode: then as it came, ``answer_too_deep``),
anything else (errors, other content types) byte for byte. A ``Host`` the record URL
cannot be built from (a port out of range) leaves that header out (``host``).
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from sidecar.proxy import jsonio
from sidecar.proxy.learn import (
    BodyFacts,
    RequestTrace,
    clean_label,
    clean_traceparent,
    inspect_body,
    new_request_id,
    usage_tokens,
)
from sidecar.proxy.relay import StreamRelay
from sidecar.proxy.sse import SseFramer
from sidecar.proxy.upstream import (
    ANSWER_DROP,
    ENERGY_HEADER,
    HOP,
    MAX_JSON_ANSWER_BYTES,
    RECORD_URL,
    REQUEST_ID,
    TASK_HEADER,
    ProxyContext,
    cut_off,
    forward_headers,
    open_upstream,
)

__all__ = ["completion"]

_DROP_ASKING = HOP | {"accept-encoding", REQUEST_ID.lower()}  # request headers not passed on as they are


def _trace(ctx: ProxyContext, request: web.BaseRequest, facts: BodyFacts) -> RequestTrace:
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


async def completion(ctx: ProxyContext, request: web.BaseRequest, body: bytes) -> web.StreamResponse:
    facts = inspect_body(request.path, body, ctx.counts)
    ctx.counts.add("streams" if facts.stream else "completions")
    trace = _trace(ctx, request, facts)
    headers = forward_headers(request.headers, _DROP_ASKING)
    headers[REQUEST_ID] = trace.request_id
    headers["Accept-Encoding"] = "identity"  # the proxy reads completions; no compressed bodies
    ctx.in_flight += 1
    try:
        upstream = await open_upstream(ctx, request, facts.body, headers)
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
        return cut_off(ctx, request, trace.answered)
    finally:
        ctx.in_flight -= 1
        trace.end_s = ctx.clock()
        trace.done = True
        trace.changed()


async def _answer(
    ctx: ProxyContext,
    request: web.BaseRequest,
    upstream: aiohttp.ClientResponse,
    trace: RequestTrace,
    facts: BodyFacts,
) -> web.StreamResponse:
    ours = {REQUEST_ID: trace.request_id}
    if upstream.status >= 400:  # refused (429, 500 ...): no work reached an engine, no record is kept
        trace.outcome = "error"
    else:
        try:
            ours[RECORD_URL] = ctx.record_url(request, trace.request_id)
        except ValueError:  # a Host the URL cannot be built from (``x:99999``): the answer goes on
            ctx.counts.add("host")
    kind = upstream.headers.get("Content-Type", "")
    if kind.startswith("text/event-stream"):
        return await _stream(ctx, request, upstream, trace, facts, ours)
    head = b""
    if kind.startswith("application/json") and upstream.status < 400:
        async for piece in upstream.content.iter_any():  # the whole answer, unless it is huge
            head += piece
            if len(head) > MAX_JSON_ANSWER_BYTES:
                ctx.counts.add("answer_too_large")
                break
        else:
            return _json_answer(ctx, upstream, trace, head, ours)
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    response.headers.extend(forward_headers(upstream.headers, ANSWER_DROP))
    response.headers.update(ours)
    await response.prepare(request)
    trace.answered = True
    if head:
        await response.write(head)
    async for piece in upstream.content.iter_any():
        await response.write(piece)
    await response.write_eof()
    return response


def _json_answer(
    ctx: ProxyContext, upstream: aiohttp.ClientResponse, trace: RequestTrace, raw: bytes, ours: dict[str, str]
) -> web.Response:
    headers = forward_headers(upstream.headers, ANSWER_DROP)
    headers.update(ours)
    try:
        doc, strict = jsonio.read(raw)
    except ValueError:
        doc, strict = None, False
    if not isinstance(doc, dict):
        ctx.counts.add("malformed_json")
        return web.Response(status=upstream.status, body=raw, headers=headers)
    if doc.get("usage") is not None:
        trace.usage = usage_tokens(doc["usage"], ctx.counts)
    trace.response_model = clean_label(doc.get("model"), "response_model", ctx.counts)
    share = 1.0 / max(ctx.in_flight, 1)
    trace.shared_s = (ctx.clock() - trace.arrival_s) * share
    trace.shared_steps = (trace.usage[1] if trace.usage else 1) * share
    energy = ctx.energy(trace)
    if not strict and not _is_utf8(raw):  # UTF-16 or -32 JSON (json reads it): re-encoding it would
        return web.Response(status=upstream.status, body=raw, headers=headers)  # change its charset
    try:
        body = jsonio.set_member(raw, doc, strict, "energy", energy)
    except ValueError:  # nested too deep for json to re-encode: the engine's answer as it came
        ctx.counts.add("answer_too_deep")
        return web.Response(status=upstream.status, body=raw, headers=headers)
    if energy["joules"] is not None:  # None: no price sheet (the energy object says why)
        headers[ENERGY_HEADER] = str(energy["joules"])
    return web.Response(status=upstream.status, body=body, headers=headers)


async def _stream(
    ctx: ProxyContext,
    request: web.BaseRequest,
    upstream: aiohttp.ClientResponse,
    trace: RequestTrace,
    facts: BodyFacts,
    ours: dict[str, str],
) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    response.headers.extend(forward_headers(upstream.headers, ANSWER_DROP))
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
    relay_one = relay.relay
    async for piece in upstream.content.iter_any():  # the hot path: a chunk in, timed, out
        events = framer.feed(piece)
        out = relay_one(events[0]) if len(events) == 1 else b"".join([relay_one(e) for e in events])
        if out:
            await response.write(out)
    tail = b"".join([relay_one(e) for e in framer.close()])
    if tail:
        await response.write(tail)
    if framer.oversized:
        ctx.counts.add("malformed_sse")
    await response.write_eof()
    return response


def _is_utf8(raw: bytes) -> bool:
    """Whether an answer's bytes are UTF-8 (JSON's charset but for UTF-16 and -32, which json reads):
    the energy is added to UTF-8 only, as its JSON is written in UTF-8 (a UTF-16 answer came back
    as ASCII under its UTF-16 Content-Type, which the client could not read)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
