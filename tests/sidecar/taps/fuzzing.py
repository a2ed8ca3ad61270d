"""Hypothesis strategies for hostile tap input, and the checks every case must pass.

Shared by the tests (a few hundred cases in ``make test``) and ``benchmarks/fuzz.py``
(>= 100,000 cases). A case mixes good items (unique ids ``good-*``, values a real
server sends) with bad ones (ids ``bad-*``: a good item with one field replaced by a
hostile value, or cut short), so each check can assert both halves of the rule:
no exception escapes the tap (except the documented gRPC abort), and no good item
next to a bad one is lost.
"""

from __future__ import annotations

import json
import math
import string
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from sidecar.contracts import span_attributes as d
from sidecar.taps.diffusion import DiffusionSpanHandler
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import SpanHandler, TapOutput
from sidecar.taps.vllm_plugin import PluginReceiver
from sidecar.taps.vllm_spans import VllmSpanHandler

__all__ = [
    "Aborted",
    "check_http_path",
    "check_otlp_bytes",
    "check_otlp_export",
    "check_plugin_bytes",
    "check_plugin_datagram",
    "datagram_bytes",
    "hostile",
    "http_ids",
    "otlp_exports",
    "plugin_datagrams",
]

NOW_S = 1_780_000_000.0  # the fake wall clock every receiver here runs on

hostile_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([10**400, -(10**400), 2**63, -(2**63), 1e30, -7, 0.5]),
)
hostile = st.one_of(
    hostile_numbers,
    st.text(max_size=12),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
tokens = st.integers(min_value=0, max_value=8192)
# any bytes, or JSON nested deeper than the parser's recursion limit (a RecursionError once failed the tick)
datagram_bytes = st.one_of(st.binary(max_size=2048), st.integers(1, 20_000).map(lambda n: b"[" * n))
seconds = st.floats(min_value=0.0, max_value=30.0)


# ---- plugin datagrams -----------------------------------------------------------------------------
@st.composite
def _fin_row(draw: st.DrawFn, k: int) -> list[Any]:
    return [f"chatcmpl-good-f{k}", draw(tokens), draw(tokens), draw(seconds), draw(seconds), draw(seconds),
            draw(seconds), draw(st.sampled_from(["stop", "length", "abort"]))]  # fmt: skip


@st.composite
def _start_row(draw: st.DrawFn, k: int) -> list[Any]:
    prompt = draw(tokens)
    return [f"good-s{k}", prompt, draw(st.integers(0, prompt)), draw(seconds)]


@st.composite
def _spoil(draw: st.DrawFn, row: list[Any]) -> list[Any]:
    """A good row made bad: its id marked ``bad-``, then one field hostile, or the row cut short."""
    row = [str(row[0]).replace("good-", "bad-"), *row[1:]]
    if draw(st.booleans()):
        return row[: draw(st.integers(1, len(row) - 1))]
    i = draw(st.integers(0, len(row) - 1))
    row[i] = draw(hostile.map(_not_a_good_id) if i == 0 else hostile)
    return row


def _not_a_good_id(value: Any) -> Any:
    """A hostile string id never equals a good item's id (it would make that item a duplicate)."""
    return f"bad-{value}" if isinstance(value, str) and value else value


@st.composite
def _rows(draw: st.DrawFn, make: Any) -> tuple[list[list[Any]], set[str]]:
    rows: list[list[Any]] = []
    good: set[str] = set()
    for k in range(draw(st.integers(0, 4))):
        row = draw(make(k))
        if draw(st.booleans()):
            good.add(str(row[0]).removeprefix("chatcmpl-"))
            rows.append(row)
        else:
            rows.append(draw(_spoil(row)))
    return rows, good


@st.composite
def plugin_datagrams(draw: st.DrawFn) -> tuple[bytes, set[str], set[str]]:
    """(datagram, good finished ids, good started ids): a valid header, rows good and bad."""
    fins, good_fins = draw(_rows(_fin_row))
    starts, good_starts = draw(_rows(_start_row))
    seq = draw(st.integers(-(10**30), 10**30))
    wall_s = NOW_S + draw(st.floats(-60, 60))
    msg: dict[str, Any] = {"v": 1, "pid": 7, "seq": seq, "wall": wall_s, "model": "m", "live": True}
    msg.update(start=starts, fin=fins)
    if draw(st.booleans()):
        it = [draw(seconds), draw(tokens), draw(tokens), draw(tokens), 0]
        if draw(st.booleans()):
            it[draw(st.integers(0, 4))] = draw(hostile)
        msg["it"] = it
    if draw(st.booleans()):
        msg["sched"] = [draw(hostile), draw(hostile), draw(hostile)]
    if draw(st.booleans()):
        msg["gone"] = draw(st.one_of(hostile, st.lists(hostile, max_size=3)))
    return json.dumps(msg).encode(), good_fins, good_starts


def _plugin() -> PluginReceiver:
    return PluginReceiver(lambda unix_s: unix_s - NOW_S, wall=lambda: NOW_S)


def check_plugin_datagram(case: tuple[bytes, set[str], set[str]]) -> None:
    """Every good finished row gives its request info, every good start is taken, nothing escapes."""
    data, good_fins, good_starts = case
    rx, out = _plugin(), TapOutput()
    rx.feed(data, out)
    finished = {i.request_id for i in out.infos}
    assert good_fins <= finished, f"lost good finished rows: {good_fins - finished}"
    assert all(rx.claims(rid) for rid in good_starts), "lost a good start row"
    assert rx.counts["internal_errors"] == 0
    assert all(math.isfinite(e.t0_s) and math.isfinite(e.t1_s) and math.isfinite(e.units) for e in out.events)


def check_plugin_bytes(data: bytes) -> None:
    """Any bytes at all: counted, never raised."""
    rx = _plugin()
    rx.feed(data, TapOutput())
    assert rx.counts["internal_errors"] == 0


# ---- OTLP exports ---------------------------------------------------------------------------------
def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_any(x) for x in value]))
    return AnyValue(string_value=str(value))


hostile_attr = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=12),
    st.booleans(),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=3),
)


@st.composite
def _llm_span(draw: st.DrawFn, k: int, good: bool) -> Span:
    start_ns = int((NOW_S + draw(st.floats(-60, 60))) * 1e9)
    attrs: dict[str, Any] = {
        "gen_ai.request.id": f"chatcmpl-{'good' if good else 'bad'}-o{k}",
        "gen_ai.usage.prompt_tokens": draw(tokens),
        "gen_ai.usage.completion_tokens": draw(tokens),
        "gen_ai.latency.e2e": draw(seconds),
        "gen_ai.latency.time_in_model_prefill": draw(seconds),
        "gen_ai.latency.time_in_model_decode": draw(seconds),
    }
    end_ns = start_ns + int(draw(seconds) * 1e9)
    if not good:
        spoil = draw(st.sampled_from(["attr", "attr", "times", "id"]))
        if spoil == "attr":
            attrs[draw(st.sampled_from(sorted(attrs)[1:]))] = draw(hostile_attr)
        elif spoil == "times":
            start_ns, end_ns = draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**64 - 1))
        else:
            attrs["gen_ai.request.id"] = draw(st.one_of(hostile_attr.map(_not_a_good_id), st.just("")))
    return Span(trace_id=(10**6 + k).to_bytes(16, "big"), span_id=(10**6 + k).to_bytes(8, "big"),
                name="llm_request", start_time_unix_nano=start_ns, end_time_unix_nano=end_ns,
                attributes=[KeyValue(key=key, value=_any(v)) for key, v in attrs.items()])  # fmt: skip


@st.composite
def _diffusion_span(draw: st.DrawFn, k: int, good: bool) -> Span:
    start_ns = int((NOW_S + draw(st.floats(-60, 60))) * 1e9)
    attrs: dict[str, Any] = {d.SPAN_KIND: d.REQUEST_SPAN, d.REQUEST_ID: f"{'good' if good else 'bad'}-d{k}"}
    attrs.update({d.OUTPUT_UNITS: draw(st.integers(1, 8)), d.UNIT: "image", d.MODEL: "sd"})
    if not good:
        attrs[draw(st.sampled_from([d.REQUEST_ID, d.OUTPUT_UNITS, d.UNIT, d.MODEL]))] = draw(
            hostile_attr.map(_not_a_good_id)
        )
    return Span(trace_id=(2 * 10**6 + k).to_bytes(16, "big"), span_id=(2 * 10**6 + k).to_bytes(8, "big"),
                name="diffusion.request", start_time_unix_nano=start_ns, end_time_unix_nano=start_ns + 10**9,
                attributes=[KeyValue(key=key, value=_any(v)) for key, v in attrs.items()])  # fmt: skip


@st.composite
def _diffusion_call(draw: st.DrawFn, k: int) -> list[Span]:
    """A pipeline call's batch-start span and batch span (either may be missing), with hostile fields
    or times now and then: they make work and holds, never a request info, so none is a good item."""
    start_s = NOW_S + draw(st.floats(-1200, 400))  # before the hold's bound, and dated ahead
    attrs: dict[str, Any] = {
        d.BATCH_ID: f"fb-{k}",
        d.BATCH_MEMBERS: [f"m{k}-{j}" for j in range(draw(st.integers(1, 3)))],
        d.BATCH_SIZE: draw(st.integers(0, 2000)),
        d.DENOISE_STEPS: draw(st.integers(1, 50)),
    }
    attrs[d.BATCH_MEMBER_UNITS] = draw(st.lists(st.integers(1, 10**6), min_size=0, max_size=4))
    if draw(st.booleans()):
        attrs[draw(st.sampled_from(sorted(attrs)))] = draw(hostile_attr)
    kinds = draw(
        st.sampled_from([(d.BATCH_START_SPAN,), (d.BATCH_SPAN,), (d.BATCH_START_SPAN, d.BATCH_SPAN)])
    )
    spans = []
    for n, kind in enumerate(kinds):
        t0_ns = int(start_s * 1e9)
        t1_ns = t0_ns if kind == d.BATCH_START_SPAN else t0_ns + 10**9
        span_attrs = {d.SPAN_KIND: kind, **attrs}
        spans.append(
            Span(
                trace_id=(3 * 10**6 + k).to_bytes(16, "big"),
                span_id=(3 * 10**6 + 2 * k + n).to_bytes(8, "big"),
                name=kind,
                start_time_unix_nano=t0_ns,
                end_time_unix_nano=t1_ns,
                attributes=[KeyValue(key=key, value=_any(v)) for key, v in span_attrs.items()],
            )
        )
    return spans


@st.composite
def otlp_exports(draw: st.DrawFn) -> tuple[bytes, set[str]]:
    """(serialized export, good request ids): llm_request and diffusion spans, good and bad, shuffled."""
    spans: list[Span] = []
    good: set[str] = set()
    for k in range(draw(st.integers(0, 8))):
        ok = draw(st.booleans())
        kind = draw(st.sampled_from(["llm", "diffusion", "call"]))
        if kind == "llm":
            spans.append(draw(_llm_span(k, ok)))
            good |= {f"good-o{k}"} if ok else set()
        elif kind == "diffusion":
            spans.append(draw(_diffusion_span(k, ok)))
            good |= {f"good-d{k}"} if ok else set()
        else:
            spans += draw(_diffusion_call(k))
    spans = draw(st.permutations(spans))
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    )
    return request.SerializeToString(), good


class Aborted(Exception):
    """What ``grpc.ServicerContext.abort`` does: end the call with a status (the documented refusal)."""


class _Context:
    def abort(self, code: Any, details: str) -> None:
        raise Aborted(code, details)


def _receiver() -> OtlpReceiver:
    handlers: list[SpanHandler] = [
        VllmSpanHandler(lambda unix_s: unix_s - NOW_S, wall=lambda: NOW_S),
        DiffusionSpanHandler(lambda unix_s: unix_s - NOW_S),
    ]
    return OtlpReceiver(handlers, wall=lambda: NOW_S, max_message_bytes=256 * 1024)


def check_otlp_export(case: tuple[bytes, set[str]]) -> None:
    """Every good span's request info comes out; the spans refused on arrival are the ones reported."""
    payload, good = case
    rx = _receiver()
    response = rx.export(payload, _Context())
    refused = sum(n for k, n in rx.counts.items() if k.startswith("rejected_")) + rx.counts["dropped"]
    assert response.partial_success.rejected_spans == refused
    _, infos = rx.due(0.0)
    handled = {i.request_id for i in infos}
    assert good <= handled, f"lost good spans: {good - handled}"
    assert rx.counts["internal_errors"] == 0


def check_otlp_bytes(payload: bytes) -> None:
    """Any bytes at all: handled, or refused with a gRPC status (``Aborted``); nothing else escapes."""
    rx = _receiver()
    try:
        rx.export(payload, _Context())
    except Aborted:
        assert rx.counts["refused_undecodable"] + rx.counts["refused_too_large"] == 1
    rx.due(0.0)
    assert rx.counts["internal_errors"] == 0


# ---- HTTP paths -----------------------------------------------------------------------------------
http_ids = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=40),
)


async def check_http_path(app: Any, known: dict[str, dict[str, Any]], request_id: str) -> None:
    """A known id is 200, a printable unknown one 404, anything else 400; never a 500."""
    from aiohttp.test_utils import make_mocked_request

    path = "/v1/requests/" + quote(request_id, safe="")
    match = await app.router.resolve(make_mocked_request("GET", path, app=app))
    if match.http_exception is not None:  # the router's own 404 (an empty id, a '/' in it): no handler runs
        assert match.http_exception.status == 404
        return
    response = await match.handler(make_mocked_request("GET", path, app=app, match_info=dict(match)))
    if request_id in known:
        assert response.status == 200
    elif request_id and len(request_id) <= 256 and request_id.isprintable():
        assert response.status == 404
    else:
        assert response.status == 400, (request_id, response.status)
