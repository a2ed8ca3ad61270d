"""Enriched spans: the request span, re-sent upstream with its final energy, in either arrival order.

The upstream is the sidecar's own OTLP/gRPC receiver, in process: the spans go
through the OTel SDK's batch processor and OTLP exporter over real gRPC.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from sidecar.attribution.records import RequestEnergy
from sidecar.taps import vllm_forward
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import ReceivedSpan, TapOutput
from sidecar.taps.vllm_forward import SpanForwarder, span_bytes
from tests.support import free_port, wait_for


class Sink:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []

    def handle(self, span: ReceivedSpan, out: TapOutput) -> bool:
        self.spans.append(span)
        return True

    def stats(self) -> object:
        return None


def record(request_id: str, energy_j: float = 6.0, output: float = 3.0) -> RequestEnergy:
    return RequestEnergy(
        request_id=request_id, model="m", operation="chat", task="code", unit="token", energy_j=energy_j,
        phase_j={"prefill": 1.0, "decode": energy_j - 1.0, "denoise": 0.0}, component_j={}, prompt_tokens=5,
        output_tokens=int(output), output_units=output, start_s=0.0, end_s=1.0, end_unix_s=1.0, busy_s=1.0,
        approximate=False, final=True, rule="fitted", energy_source="measured",
        energy_low_j=0.8 * energy_j, energy_high_j=1.2 * energy_j, fit_quality="ok",
    )  # fmt: skip


def span(raw_id: str, trace_id: str = "0af7651916cd43dd8448eb211c80319c") -> ReceivedSpan:
    span_id = "b7ad6b71692033" + raw_id.encode().hex()[-2:]  # one span per request
    return ReceivedSpan(
        trace_id, span_id, "00f067aa0ba902b7", "llm_request",
        1000.0, 1002.0, {"gen_ai.request.id": raw_id, "gen_ai.usage.completion_tokens": 3},
        {"service.name": "vllm"}, "vllm.llm_engine",
    )  # fmt: skip


def collect(receiver: OtlpReceiver, sink: Sink, n: int, timeout_s: float = 10.0) -> list[ReceivedSpan]:
    def enough() -> bool:
        receiver.due(0.0)
        return len(sink.spans) >= n

    wait_for(enough, timeout_s, what=f"{n} forwarded spans", interval_s=0.02)
    return sink.spans


@pytest.fixture
def upstream() -> Iterator[tuple[OtlpReceiver, Sink]]:
    sink = Sink()
    receiver = OtlpReceiver([sink], host="127.0.0.1", port=0, wall=lambda: 1001.0)  # type: ignore[list-item]
    receiver.start()  # wall: the spans' fake clock (the receiver refuses spans dated far from now)
    yield receiver, sink
    receiver.stop()


def test_spans_are_forwarded_with_energy_attributes_whichever_comes_first(
    upstream: tuple[OtlpReceiver, Sink],
) -> None:
    receiver, sink = upstream
    fwd = SpanForwarder(f"127.0.0.1:{receiver.port}")
    fwd.start()
    try:
        fwd.on_span("a", span("chatcmpl-a"))  # span first
        fwd.on_final([record("a"), record("b", 2.0, 0.0)])  # record first for b
        fwd.on_span("b", span("chatcmpl-b"))
        spans = {s.attributes["gen_ai.request.id"]: s for s in collect(receiver, sink, 2)}
    finally:
        fwd.stop()
    a = spans["chatcmpl-a"]
    assert a.trace_id == "0af7651916cd43dd8448eb211c80319c" and a.span_id == span("chatcmpl-a").span_id
    assert a.parent_span_id == "00f067aa0ba902b7" and a.name == "llm_request" and a.scope == "vllm.llm_engine"
    assert a.resource["service.name"] == "vllm" and (a.start_unix_s, a.end_unix_s) == (1000.0, 1002.0)
    assert a.attributes["gen_ai.usage.completion_tokens"] == 3  # vLLM's own attributes are kept
    assert a.attributes["jouletrace.energy.joules"] == 6.0
    assert a.attributes["jouletrace.energy.prefill_joules"] == 1.0
    assert a.attributes["jouletrace.energy.decode_joules"] == 5.0
    assert a.attributes["jouletrace.energy.joules_per_output_token"] == 2.0
    assert (
        a.attributes["jouletrace.energy.approximate"] is False and a.attributes["jouletrace.task"] == "code"
    )
    assert a.attributes["jouletrace.energy.source"] == "measured"
    assert a.attributes["jouletrace.energy.low_joules"] == pytest.approx(4.8)  # the record's interval
    assert a.attributes["jouletrace.energy.high_joules"] == pytest.approx(7.2)
    assert a.attributes["jouletrace.energy.fit_quality"] == "ok"
    assert "jouletrace.energy.joules_per_output_token" not in spans["chatcmpl-b"].attributes
    assert fwd.counts["forwarded"] == 2 and fwd.counts["failed"] == 0


def test_an_upstream_that_comes_up_late_still_gets_the_span_through_the_exporters_retries() -> None:
    port = free_port()
    fwd = SpanForwarder(f"127.0.0.1:{port}", timeout_s=8.0)
    fwd.start()
    sink = Sink()
    receiver = OtlpReceiver([sink], host="127.0.0.1", port=port, wall=lambda: 1001.0)  # type: ignore[list-item]
    try:
        fwd.on_span("a", span("chatcmpl-a"))
        fwd.on_final([record("a")])
        time.sleep(0.6)  # the first export (after the 200 ms batch delay) finds nobody listening
        receiver.start()
        assert [s.attributes["gen_ai.request.id"] for s in collect(receiver, sink, 1)] == ["chatcmpl-a"]
        wait_for(lambda: fwd.counts["forwarded"] == 1, 5.0, what="the export's result")
        assert fwd.counts["failed"] == 0
    finally:
        fwd.stop()
        receiver.stop()


def test_an_absent_upstream_costs_failed_exports_not_the_sidecar() -> None:
    fwd = SpanForwarder(f"127.0.0.1:{free_port()}", timeout_s=0.2)  # nothing listens there
    fwd.start()
    try:
        t0 = time.monotonic()
        fwd.on_span("a", span("chatcmpl-a"))
        fwd.on_final([record("a")])
        assert time.monotonic() - t0 < 0.05  # handing over never waits for the network
        wait_for(lambda: fwd.counts["failed"] == 1, 5.0, what="a failed export")
    finally:
        fwd.stop()
    assert fwd.counts["forwarded"] == 0


def test_beyond_the_queue_bound_spans_are_dropped_and_counted() -> None:
    fwd = SpanForwarder(f"127.0.0.1:{free_port()}", max_queue=2, timeout_s=0.2)
    fwd.start()
    try:
        for i in range(5):
            fwd.on_span(f"r{i}", span(f"chatcmpl-r{i}"))
        fwd.on_final([record(f"r{i}") for i in range(5)])
        assert fwd.counts["dropped"] == 3
    finally:
        fwd.stop()


def test_a_span_with_ids_that_are_not_hex_is_counted_not_sent() -> None:
    fwd = SpanForwarder(f"127.0.0.1:{free_port()}", timeout_s=0.2)
    fwd.start()
    try:
        fwd.on_span("a", span("chatcmpl-a", trace_id="not-hex"))
        fwd.on_final([record("a")])
        assert fwd.counts["malformed"] == 1 and fwd.counts["dropped"] == 0
    finally:
        fwd.stop()


def test_before_start_and_after_stop_spans_are_dropped_and_counted() -> None:
    fwd = SpanForwarder(f"127.0.0.1:{free_port()}")
    fwd.on_span("a", span("chatcmpl-a"))
    fwd.on_final([record("a")])
    assert fwd.counts["dropped"] == 1


def test_a_late_task_reaches_a_record_still_waiting_for_its_span_and_counts_one_already_sent(
    upstream: tuple[OtlpReceiver, Sink],
) -> None:
    receiver, sink = upstream
    fwd = SpanForwarder(f"127.0.0.1:{receiver.port}")
    fwd.start()
    try:
        fwd.on_span("a", span("chatcmpl-a"))
        fwd.on_final([replace(record("a"), task="unknown"), replace(record("b"), task="unknown")])  # a sent
        fwd.on_tasks({"a": "chat", "b": "code"})  # the client spans, after the records were final
        fwd.on_span("b", span("chatcmpl-b"))
        spans = {s.attributes["gen_ai.request.id"]: s for s in collect(receiver, sink, 2)}
    finally:
        fwd.stop()
    assert "jouletrace.task" not in spans["chatcmpl-a"].attributes  # already on its way without it
    assert spans["chatcmpl-b"].attributes["jouletrace.task"] == "code"
    assert fwd.counts["task_late_sent"] == 1


def test_a_span_with_ids_wider_than_otlp_s_is_counted_not_sent_and_forwarding_goes_on() -> None:
    """A trace id of 20 bytes (the receiver takes ids of any length) could not be encoded by the
    exporter: each such span stayed "in flight" for good, and 10,000 of them stopped forwarding."""
    fwd = SpanForwarder(f"127.0.0.1:{free_port()}", timeout_s=0.2, max_queue=2)
    fwd.start()
    try:
        for k in range(5):
            fwd.on_span(f"w{k}", span(f"chatcmpl-w{k}", trace_id="ab" * 20))
            fwd.on_final([record(f"w{k}")])
        long_span = replace(span("chatcmpl-s"), span_id="cd" * 9)
        fwd.on_span("s", long_span)
        fwd.on_final([record("s")])
        assert fwd.counts["malformed"] == 6 and fwd.counts["dropped"] == 0
        fwd.on_span("ok", span("chatcmpl-ok"))
        fwd.on_final([record("ok")])
        assert fwd.counts["dropped"] == 0  # the queue bound of 2 was not used up by them
    finally:
        fwd.stop()


def test_spans_waiting_for_their_record_are_bounded_by_bytes_the_oldest_going_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client's span may carry megabytes of attributes: the waiting spans are bounded by what they
    hold, not only by count; a span that goes is counted, and the ones kept still meet their record."""
    big = replace(span("chatcmpl-big"), attributes={"gen_ai.request.id": "chatcmpl-big", "blob": "x" * 5000})
    monkeypatch.setattr(vllm_forward, "_MAX_WAITING_BYTES", 2 * span_bytes(big) + 10)
    fwd = SpanForwarder(f"127.0.0.1:{free_port()}")
    for k in range(3):
        fwd.on_span(f"b{k}", big)
    assert fwd.counts["evicted_spans"] == 1  # b0, the oldest
    fwd.on_final([record("b0"), record("b1"), record("b2")])  # b1, b2 met theirs (no upstream: dropped)
    assert fwd.counts["dropped"] == 2
    fwd.on_span("b3", big)  # their bytes were given back: room again
    assert fwd.counts["evicted_spans"] == 1


def test_a_span_sent_twice_while_waiting_is_held_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_forward, "_MAX_WAITING_BYTES", span_bytes(span("chatcmpl-a")) + 10)
    fwd = SpanForwarder(f"127.0.0.1:{free_port()}")
    for _ in range(5):
        fwd.on_span("a", span("chatcmpl-a"))
    assert fwd.counts["evicted_spans"] == 0


def test_waiting_spans_and_records_beyond_the_count_bound_go_oldest_first_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vllm_forward, "_MAX_WAITING", 3)
    fwd = SpanForwarder(f"127.0.0.1:{free_port()}")
    for k in range(5):
        fwd.on_span(f"s{k}", span(f"chatcmpl-s{k}"))
    fwd.on_final([record(f"r{k}") for k in range(4)])
    assert fwd.counts["evicted_spans"] == 2 and fwd.counts["evicted_records"] == 1
    fwd.on_final([record("s0"), record("s4")])  # s0 went; s4 is still there (sent: no upstream, dropped)
    assert fwd.counts["dropped"] == 1


def test_span_bytes_counts_keys_text_and_list_items() -> None:
    s = ReceivedSpan("ab", "cd", "", "n", 0.0, 1.0, {"k": "vvv", "n": 3, "l": ["xy", 1]}, {"r": "z"})
    assert span_bytes(s) == 2 + 2 + 0 + 1 + (1 + 3) + (1 + 16) + (1 + 2 + 16) + (1 + 1)


def test_span_bytes_counts_the_text_inside_a_nested_array() -> None:
    """An array of arrays counted 16 bytes a row: spans holding megabytes in one passed both byte
    bounds (waiting 64 MiB, sending 32 MiB)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

    from sidecar.taps.otlp_decode import decode_request
    from tests.sidecar.taps.test_otlp_hostile import export
    from tests.sidecar.taps.test_otlp_hostile import span as otlp_span

    mb = 1024 * 1024
    s = otlp_span(0, time.time())
    inner = AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="x" * mb)]))
    s.attributes.append(KeyValue(key="pad", value=AnyValue(array_value=ArrayValue(values=[inner]))))
    (decoded,) = decode_request(ExportTraceServiceRequest.FromString(export(s).SerializeToString()))
    assert isinstance(decoded.attributes["pad"][0], list) and span_bytes(decoded) >= mb
