"""Enriched spans: the request span, re-sent upstream with its final energy, in either arrival order."""

from __future__ import annotations

import socket
import time

from sidecar.attribution.records import RequestEnergy
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import ReceivedSpan, TapOutput
from sidecar.taps.vllm_forward import SpanForwarder


class Sink:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []

    def handle(self, span: ReceivedSpan, out: TapOutput) -> bool:
        self.spans.append(span)
        return True


def record(request_id: str, energy_j: float = 6.0, output: float = 3.0) -> RequestEnergy:
    return RequestEnergy(
        request_id=request_id, model="m", operation="chat", task="code", unit="token", energy_j=energy_j,
        phase_j={"prefill": 1.0, "decode": energy_j - 1.0, "denoise": 0.0}, component_j={}, prompt_tokens=5,
        output_tokens=int(output), output_units=output, start_s=0.0, end_s=1.0, end_unix_s=1.0, busy_s=1.0,
        approximate=False, final=True, rule="fitted", energy_source="measured",
    )  # fmt: skip


def span(raw_id: str) -> ReceivedSpan:
    span_id = "b7ad6b71692033" + raw_id.encode().hex()[-2:]  # one span per request
    return ReceivedSpan(
        "0af7651916cd43dd8448eb211c80319c", span_id, "00f067aa0ba902b7", "llm_request",
        1000.0, 1002.0, {"gen_ai.request.id": raw_id, "gen_ai.usage.completion_tokens": 3},
        {"service.name": "vllm"}, "vllm.llm_engine",
    )  # fmt: skip


def collect(receiver: OtlpReceiver, sink: Sink, n: int) -> list[ReceivedSpan]:
    deadline = time.monotonic() + 5
    while len(sink.spans) < n and time.monotonic() < deadline:
        receiver.due(0.0)
        time.sleep(0.02)
    return sink.spans


def test_spans_are_forwarded_with_energy_attributes_whichever_comes_first() -> None:
    sink = Sink()
    upstream = OtlpReceiver([sink], host="127.0.0.1", port=0, wall=lambda: 1001.0)  # the spans' fake clock
    upstream.start()
    fwd = SpanForwarder(f"127.0.0.1:{upstream.port}")
    fwd.start()
    try:
        fwd.on_span("a", span("chatcmpl-a"))  # span first
        fwd.on_final([record("a"), record("b", 2.0, 0.0)])  # record first for b
        fwd.on_span("b", span("chatcmpl-b"))
        spans = {s.attributes["gen_ai.request.id"]: s for s in collect(upstream, sink, 2)}
    finally:
        fwd.stop()
        upstream.stop()
    a = spans["chatcmpl-a"]
    assert a.trace_id == "0af7651916cd43dd8448eb211c80319c" and a.parent_span_id == "00f067aa0ba902b7"
    assert a.resource["service.name"] == "vllm" and a.start_unix_s == 1000.0
    assert a.attributes["jouletrace.energy.joules"] == 6.0
    assert a.attributes["jouletrace.energy.prefill_joules"] == 1.0
    assert a.attributes["jouletrace.energy.decode_joules"] == 5.0
    assert a.attributes["jouletrace.energy.joules_per_output_token"] == 2.0
    assert (
        a.attributes["jouletrace.energy.approximate"] is False and a.attributes["jouletrace.task"] == "code"
    )
    assert "jouletrace.energy.joules_per_output_token" not in spans["chatcmpl-b"].attributes
    assert fwd.counts["forwarded"] == 2


def test_an_absent_upstream_costs_failed_exports_not_the_sidecar() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fwd = SpanForwarder(f"127.0.0.1:{port}", timeout_s=0.2)
    fwd.start()
    t0 = time.monotonic()
    fwd.on_span("a", span("chatcmpl-a"))
    fwd.on_final([record("a")])
    assert time.monotonic() - t0 < 0.05  # handing over never waits for the network
    deadline = time.monotonic() + 5
    while fwd.counts["failed"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    fwd.stop()
    assert fwd.counts["failed"] == 1
