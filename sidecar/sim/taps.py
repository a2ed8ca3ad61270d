"""What the sidecar's taps would receive from a simulated run, encoded as the real senders encode it.

The accuracy benchmark and the tests drive the *real* receivers with these
bytes, so the path measured is the path users run:

* :func:`hook_datagrams`: the vLLM scheduler hook's UDP datagrams
  (servers/vllm/scheduler_hook.py, format :mod:`sidecar.contracts.scheduler_wire`):
  every step's members with their scheduled tokens and KV tokens before the step;
* :func:`plugin_datagrams`: the vLLM stat-logger plugin's UDP datagrams
  (servers/vllm/plugin.py, format :mod:`sidecar.contracts.vllm_wire`), one per
  engine step: the step's token counts, the requests whose prefill finished
  in it (with ``prefill_s`` = first token - first scheduled, as vLLM's request
  stats give it) and the requests that finished, with their timings.
* :func:`span_exports`: vLLM's ``llm_request`` spans as OTLP
  ``ExportTraceServiceRequest`` bytes, batched as a span processor exports
  them (every ``export_delay_s``), with the attributes vLLM sets.

Each item is ``(send_s, payload)`` on the simulated clock; the receiver maps
Unix time back with ``to_mono`` (:data:`UNIX_OFFSET_S` here).
"""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from sidecar.attribution.events import Phase, RequestInfo
from sidecar.contracts.scheduler_wire import FinRow, Message, NewRow, StepRow
from sidecar.contracts.scheduler_wire import encode as hook_encode
from sidecar.contracts.vllm_wire import VERSION, encode
from sidecar.sim.run import SimRun
from sidecar.taps.vllm_spans import SPAN_ATTRIBUTES, SPAN_NAME

__all__ = ["UNIX_OFFSET_S", "Payloads", "hook_datagrams", "plugin_datagrams", "span_exports", "to_mono"]

UNIX_OFFSET_S = 1.7e9  # simulated second 0 is this Unix time
Payloads = list[tuple[float, bytes]]
_RECORD_DELAY_S = 0.0005  # from a step's end to the plugin's record() call
_PID = 4242


def to_mono(unix_s: float) -> float:
    """Unix seconds -> simulated seconds (the receivers' ``to_mono``)."""
    return unix_s - UNIX_OFFSET_S


def plugin_datagrams(run: SimRun, *, model: str = "sim-llm") -> Payloads:
    """The stat-logger plugin's datagrams for every step of ``run``."""
    info = {r.request_id: r for r in run.requests}
    scheduled: dict[str, float] = {}
    out: Payloads = []
    for seq, step in enumerate(run.steps):
        gen = computed = 0
        starts, fins = [], []
        for m in step.members:
            scheduled.setdefault(m.request_id, step.t0_s)
            if m.phase is Phase.PREFILL:
                computed += m.tokens
            else:
                gen += m.tokens
            r = info[m.request_id]
            if m.phase is Phase.PREFILL and run.first_token_s.get(m.request_id) == step.t1_s:
                gen += 1  # the last prefill chunk yields the first token
                starts.append(
                    [m.request_id, r.prompt_tokens, r.prompt_tokens, step.t1_s - scheduled[m.request_id]]
                )
            if r.end_s == step.t1_s:
                fins.append(_fin_row(r, run.first_token_s[m.request_id], scheduled[m.request_id]))
        wall = step.t1_s + _RECORD_DELAY_S
        message = {
            "v": VERSION,
            "pid": _PID,
            "seq": seq,
            "wall": wall + UNIX_OFFSET_S,
            "model": model,
            "live": True,
            "it": [_RECORD_DELAY_S, gen, computed, 0, 0],
            "start": starts,
            "fin": fins,
        }
        out.extend((wall, data) for data in encode(message))
    return out


def hook_datagrams(run: SimRun, *, model: str = "sim-llm") -> Payloads:
    """The vLLM scheduler hook's datagrams (:mod:`sidecar.contracts.scheduler_wire`), one per step."""
    info = {r.request_id: r for r in run.requests}
    index: dict[str, int] = {}
    out: Payloads = []
    seq = 0
    for step in run.steps:
        wall = step.t1_s + _RECORD_DELAY_S
        new, fin = [], []
        for m in step.members:
            r = info[m.request_id]
            if m.request_id not in index:
                index[m.request_id] = len(index)
                arrival_ago_s = wall - (r.start_s or 0.0)
                new.append(NewRow(index[m.request_id], m.request_id, r.prompt_tokens, arrival_ago_s))
            if r.end_s == step.t1_s:
                fin.append(FinRow(index[m.request_id], r.output_tokens, "length"))
        row = StepRow(
            wall - step.t0_s,
            wall - step.t1_s,
            [index[m.request_id] for m in step.members],
            [m.tokens for m in step.members],
            [m.context_tokens - m.tokens for m in step.members],  # KV before the step
        )
        message = Message(_PID, seq, wall + UNIX_OFFSET_S, model, new, [row], fin, [])
        datagrams = hook_encode(message)
        seq += len(datagrams)
        out.extend((wall, data) for data in datagrams)
    return out


def _fin_row(r: RequestInfo, first_s: float, scheduled_s: float) -> list[object]:
    """A finished request as the plugin reports it: tokens, queue/prefill/decode/e2e times, reason."""
    assert r.start_s is not None and r.end_s is not None
    return [
        r.request_id,
        r.prompt_tokens,
        r.output_tokens,
        scheduled_s - r.start_s,
        first_s - scheduled_s,
        r.end_s - first_s,
        r.end_s - r.start_s,
        "length",
    ]


def span_exports(run: SimRun, *, export_delay_s: float = 0.5, model: str = "sim-llm") -> Payloads:
    """vLLM's ``llm_request`` spans, one OTLP export per ``export_delay_s`` of finished requests."""
    scheduled: dict[str, float] = {}
    for step in run.steps:
        for m in step.members:
            scheduled.setdefault(m.request_id, step.t0_s)
    finished = sorted(
        (r for r in run.requests if r.end_s is not None),
        key=lambda r: r.end_s if r.end_s is not None else 0.0,
    )
    out: Payloads = []
    batch: list[Span] = []
    flush_at = None
    for i, r in enumerate(finished):
        assert r.end_s is not None
        if flush_at is not None and r.end_s > flush_at:
            out.append((flush_at, _export(batch, model)))
            batch, flush_at = [], None
        batch.append(_span(i, r, scheduled[r.request_id], run.first_token_s[r.request_id]))
        flush_at = flush_at if flush_at is not None else r.end_s + export_delay_s
    if batch and flush_at is not None:
        out.append((flush_at, _export(batch, model)))
    return out


def _span(i: int, r: RequestInfo, scheduled_s: float, first_s: float) -> Span:
    """One request's ``llm_request`` span with vLLM's attributes (start = arrival)."""
    assert r.start_s is not None and r.end_s is not None
    start_s, end_s = r.start_s, r.end_s
    attrs: dict[str, object] = {
        SPAN_ATTRIBUTES["request_id"]: f"chatcmpl-{r.request_id}",
        SPAN_ATTRIBUTES["prompt_tokens"]: r.prompt_tokens,
        SPAN_ATTRIBUTES["completion_tokens"]: r.output_tokens,
        SPAN_ATTRIBUTES["queue_s"]: scheduled_s - start_s,
        SPAN_ATTRIBUTES["ttft_s"]: first_s - start_s,
        SPAN_ATTRIBUTES["e2e_s"]: end_s - start_s,
        SPAN_ATTRIBUTES["prefill_s"]: first_s - scheduled_s,
        SPAN_ATTRIBUTES["decode_s"]: end_s - first_s,
        SPAN_ATTRIBUTES["inference_s"]: end_s - scheduled_s,
    }
    return Span(
        trace_id=(i + 1).to_bytes(16, "big"),
        span_id=(i + 1).to_bytes(8, "big"),
        name=SPAN_NAME,
        start_time_unix_nano=int((start_s + UNIX_OFFSET_S) * 1e9),
        end_time_unix_nano=int((end_s + UNIX_OFFSET_S) * 1e9),
        attributes=[KeyValue(key=k, value=_any(v)) for k, v in attrs.items()],
    )


def _any(v: object) -> AnyValue:
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=str(v))


def _export(spans: list[Span], model: str) -> bytes:
    resource = ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])
    resource.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=model)))
    data: bytes = ExportTraceServiceRequest(resource_spans=[resource]).SerializeToString()
    return data
