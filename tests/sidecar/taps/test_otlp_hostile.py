"""Hostile OTLP exports over real gRPC: a bad span costs only itself, refusals are counted and reported."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from sidecar.contracts import span_attributes as d
from sidecar.taps import otlp, otlp_decode
from sidecar.taps.diffusion import DiffusionSpanHandler
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import ReceivedSpan, TapOutput
from sidecar.taps.vllm_spans import VllmSpanHandler
from tests.support import work_events


def value(x: Any) -> AnyValue:
    if isinstance(x, str):
        return AnyValue(string_value=x)
    if isinstance(x, int):
        return AnyValue(int_value=x)
    return AnyValue(double_value=x)


def span(i: int, start_s: float, end_s: float | None = None, **attrs: Any) -> Span:
    """An llm_request span of request ``r<i>`` (override any attribute with ``attrs``)."""
    base: dict[str, Any] = {
        "gen_ai.request.id": f"chatcmpl-r{i}",
        "gen_ai.usage.prompt_tokens": 10,
        "gen_ai.usage.completion_tokens": 5,
        "gen_ai.latency.e2e": 0.5,
    }
    base.update({k.replace("__", "."): v for k, v in attrs.items()})
    return Span(
        trace_id=(1000 + i).to_bytes(16, "big"),
        span_id=(1000 + i).to_bytes(8, "big"),
        name="llm_request",
        start_time_unix_nano=int(start_s * 1e9),
        end_time_unix_nano=int((start_s + 0.5 if end_s is None else end_s) * 1e9),
        attributes=[KeyValue(key=k, value=value(v)) for k, v in base.items()],
    )


def export(*spans: Span) -> trace_service_pb2.ExportTraceServiceRequest:
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=list(spans))])]
    )


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    rec = OtlpReceiver(
        [VllmSpanHandler(lambda unix_s: unix_s), DiffusionSpanHandler(lambda unix_s: unix_s)],
        host="127.0.0.1",
        port=0,
        max_message_bytes=64 * 1024,
    )
    rec.start()
    yield rec
    rec.stop()


@pytest.fixture
def stub(receiver: OtlpReceiver) -> Iterator[trace_service_pb2_grpc.TraceServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{receiver.port}")
    yield trace_service_pb2_grpc.TraceServiceStub(channel)
    channel.close()


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (float("nan"), "not_finite"),
        (float("inf"), "not_finite"),
        ("abc", "wrong_type"),
        (-7, "negative"),
        (1e30, "out_of_range"),
    ],
)
def test_a_poison_token_count_in_one_span_costs_that_span_only(
    receiver: OtlpReceiver, stub: trace_service_pb2_grpc.TraceServiceStub, bad: Any, reason: str
) -> None:
    now = time.time()
    spans = [span(i, now) for i in range(50)]
    spans.insert(25, span(99, now, gen_ai__usage__completion_tokens=bad))
    response = stub.Export(export(*spans), timeout=5)
    assert response.partial_success.rejected_spans == 1  # refused on arrival, told to the exporter
    assert f"1 {reason}" in response.partial_success.error_message
    events, infos = receiver.due(0.0)
    assert sorted(i.request_id for i in infos) == sorted(f"r{i}" for i in range(50))
    assert len(work_events(events)) == 100  # prefill + decode of each good request
    assert receiver.counts[f"rejected_{reason}"] == 1 and receiver.counts["internal_errors"] == 0


def test_a_span_with_an_id_that_is_not_an_id_is_refused_on_arrival_and_reported(
    receiver: OtlpReceiver, stub: trace_service_pb2_grpc.TraceServiceStub
) -> None:
    now = time.time()
    bad = [span(90, now, gen_ai__request__id=x) for x in ("", "x" * 300, "tab\there")]
    response = stub.Export(export(span(0, now), *bad, span(1, now)), timeout=5)
    answer = response.partial_success
    assert answer.rejected_spans == 3 and "3 bad_id" in answer.error_message
    _, infos = receiver.due(0.0)
    assert sorted(i.request_id for i in infos) == ["r0", "r1"] and receiver.counts["rejected_bad_id"] == 3


def test_a_span_that_says_it_ends_after_now_is_refused_on_arrival_and_reported(
    receiver: OtlpReceiver, stub: trace_service_pb2_grpc.TraceServiceStub
) -> None:
    now = time.time()
    ahead = span(90, now, gen_ai__latency__e2e=600.0)  # start + e2e: ten minutes from now
    response = stub.Export(export(span(0, now), ahead), timeout=5)
    assert (
        response.partial_success.rejected_spans == 1 and "bad_time" in response.partial_success.error_message
    )
    _, infos = receiver.due(0.0)
    assert [i.request_id for i in infos] == ["r0"]


def test_an_export_of_thousands_of_bad_ids_keeps_its_good_spans() -> None:
    rx = OtlpReceiver([VllmSpanHandler(lambda unix_s: unix_s)], max_queued_spans=100_000)
    now = time.time()
    spans = [span(i, now, gen_ai__request__id="bad\tid") for i in range(3000)]
    spans[1500:1500] = [span(5000 + i, now) for i in range(3)]
    assert rx.receive(export(*spans).SerializeToString()) == {"bad_id": 3000}
    _, infos = rx.due(0.0)
    assert sorted(i.request_id for i in infos) == ["r5000", "r5001", "r5002"]


def test_spans_refused_on_arrival_are_reported_as_partial_success_and_the_rest_kept(
    receiver: OtlpReceiver, stub: trace_service_pb2_grpc.TraceServiceStub
) -> None:
    now = time.time()
    backwards = span(1, now, end_s=now - 5)  # ends before it starts
    future = span(2, 4102444800.0)  # dated 2100
    response = stub.Export(export(span(0, now), backwards, future, span(3, now)), timeout=5)
    assert response.partial_success.rejected_spans == 2
    assert "end_before_start" in response.partial_success.error_message
    assert "bad_time" in response.partial_success.error_message
    ok = stub.Export(export(span(4, now)), timeout=5)
    assert not ok.HasField("partial_success")
    _, infos = receiver.due(0.0)
    assert sorted(i.request_id for i in infos) == ["r0", "r3", "r4"]
    assert all(i.end_s is not None and i.start_s is not None and i.end_s >= i.start_s for i in infos)


def test_a_retried_export_and_a_second_span_for_one_request_are_counted_duplicates(
    receiver: OtlpReceiver, stub: trace_service_pb2_grpc.TraceServiceStub
) -> None:
    now = time.time()
    stub.Export(export(span(0, now), span(1, now)), timeout=5)
    retry = stub.Export(export(span(0, now), span(1, now)), timeout=5)  # the exporter's retry: same span ids
    assert retry.partial_success.rejected_spans == 2
    again = span(1, now)
    again.span_id = (5555).to_bytes(8, "big")  # a new span claiming request r1 again
    stub.Export(export(again), timeout=5)
    events, infos = receiver.due(0.0)
    assert sorted(i.request_id for i in infos) == ["r0", "r1"] and len(work_events(events)) == 4
    assert receiver.counts["rejected_duplicate"] == 3


def test_oversized_and_undecodable_exports_are_refused_counted_and_the_server_keeps_serving(
    receiver: OtlpReceiver, stub: trace_service_pb2_grpc.TraceServiceStub
) -> None:
    now = time.time()
    big = export(*[span(i, now, gen_ai__padding="x" * 1000) for i in range(100)])  # ~110 KB > 64 KiB
    with pytest.raises(grpc.RpcError) as too_big:
        stub.Export(big, timeout=5)
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    channel = grpc.insecure_channel(f"127.0.0.1:{receiver.port}")
    raw = channel.unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.RpcError) as garbage:
        raw(b"\xff\xff\xff\xff not protobuf", timeout=5)
    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()
    stub.Export(export(span(0, now)), timeout=5)
    _, infos = receiver.due(0.0)
    assert [i.request_id for i in infos] == ["r0"]
    stats = receiver.stats().events
    assert stats[("otlp", "refused_too_large")] == 1 and stats[("otlp", "refused_undecodable")] == 1


class Broken:
    """A handler with a bug for one request id."""

    def handle(self, span: ReceivedSpan, out: TapOutput) -> bool:
        if span.attributes.get("gen_ai.request.id") == "chatcmpl-r1":
            raise ZeroDivisionError("a bug")
        return False


def test_a_handler_bug_on_one_span_is_counted_and_costs_no_other_span() -> None:
    rec = OtlpReceiver([Broken(), VllmSpanHandler(lambda unix_s: unix_s)], wall=lambda: 1000.0)
    attrs = [{"gen_ai.request.id": f"chatcmpl-r{i}", "gen_ai.usage.completion_tokens": 2} for i in range(3)]
    rec.accept(
        [ReceivedSpan(f"t{i}", f"s{i}", "", "llm_request", 1000.0, 1000.5, a) for i, a in enumerate(attrs)]
    )
    _, infos = rec.due(0.0)
    assert [i.request_id for i in infos] == ["r0", "r2"] and rec.counts["internal_errors"] == 1


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({d.BATCH_MEMBERS: ["a", "b"], d.BATCH_MEMBER_UNITS: [1.0, float("nan")]}, "not_finite"),
        ({d.BATCH_MEMBERS: ["a", ""], d.BATCH_MEMBER_UNITS: [1.0, 2.0]}, "bad_id"),
        ({d.BATCH_MEMBERS: ["a"], d.DENOISE_STEPS: "many"}, "wrong_type"),
        ({d.BATCH_MEMBERS: "a"}, "malformed"),
    ],
)
def test_a_poison_diffusion_batch_span_is_rejected_whole_and_counted(
    attrs: dict[str, Any], reason: str
) -> None:
    rec = OtlpReceiver([DiffusionSpanHandler(lambda unix_s: unix_s)], wall=lambda: 1000.0)
    good = {d.SPAN_KIND: d.BATCH_SPAN, d.BATCH_MEMBERS: ["c"], d.BATCH_MEMBER_UNITS: [4.0]}
    rec.accept([
        ReceivedSpan("t", "s1", "", "batch", 1000.0, 1001.0, {d.SPAN_KIND: d.BATCH_SPAN, **attrs}),
        ReceivedSpan("t", "s2", "", "batch", 1000.0, 1001.0, good),
    ])  # fmt: skip
    events, _ = rec.due(0.0)
    assert [(e.request_id, e.units) for e in events] == [("c", 4.0)]
    assert rec.counts[f"rejected_{reason}"] == 1


@pytest.mark.parametrize("kind", [d.BATCH_SPAN, d.REQUEST_SPAN])
def test_a_diffusion_span_that_says_it_ends_after_now_is_refused_and_counted(kind: str) -> None:
    rec = OtlpReceiver(
        [DiffusionSpanHandler(lambda unix_s: unix_s, wall=lambda: 1000.0)], wall=lambda: 1000.0
    )
    attrs: dict[str, Any] = {d.SPAN_KIND: kind, d.BATCH_MEMBERS: ["x"], d.BATCH_MEMBER_UNITS: [4.0]}
    if kind == d.REQUEST_SPAN:
        attrs = {d.SPAN_KIND: kind, d.REQUEST_ID: "x"}
    good = {d.SPAN_KIND: d.BATCH_SPAN, d.BATCH_MEMBERS: ["c"], d.BATCH_MEMBER_UNITS: [4.0]}
    rec.accept([
        ReceivedSpan("t", "s1", "", "batch", 999.5, 1600.0, attrs),  # ten minutes ahead
        ReceivedSpan("t", "s2", "", "batch", 999.5, 1000.0, good),
    ])  # fmt: skip
    events, infos = rec.due(0.0)
    assert [e.request_id for e in events] == ["c"] and not infos
    assert rec.counts["rejected_bad_time"] == 1


def test_an_export_arriving_at_a_full_queue_is_refused_whole_undecoded_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec = OtlpReceiver([VllmSpanHandler(lambda unix_s: unix_s)], max_queued_spans=3)
    now = time.time()
    first = rec.receive(export(*(span(i, now) for i in range(5))).SerializeToString())
    assert first == {"queue_full": 2}  # room for 3: the export is decoded, what fits is kept
    decoded: list[bytes] = []
    monkeypatch.setattr("sidecar.taps.otlp.decode_rows", lambda payload, spec: decoded.append(payload))
    second = rec.receive(export(*(span(i, now) for i in range(10, 14))).SerializeToString())
    assert second == {"queue_full": 4} and not decoded  # full: refused whole, not decoded
    assert rec.counts["received"] == 9 and rec.dropped == 6
    assert "4 queue_full" in otlp_decode.respond(second).partial_success.error_message
    monkeypatch.undo()
    _, infos = rec.due(0.0)
    assert sorted(i.request_id for i in infos) == ["r0", "r1", "r2"]
    assert not rec.receive(export(span(13, now)).SerializeToString())  # room again; a retry is welcome


def test_an_empty_attribute_last_in_an_export_costs_no_span(
    receiver: OtlpReceiver, stub: trace_service_pb2_grpc.TraceServiceStub
) -> None:
    """An empty KeyValue (valid protobuf) last in an export was refused whole as undecodable
    (INVALID_ARGUMENT, which OTel's exporters do not send again): its good spans were lost."""
    now = time.time()
    odd = span(1, now, x__n=17)  # its last byte, 17, read as the length of an empty key: the id's
    odd.attributes.append(KeyValue())
    response = stub.Export(export(span(0, now), odd), timeout=5)
    assert not response.HasField("partial_success")
    _, infos = receiver.due(0.0)
    assert sorted(i.request_id for i in infos) == ["r0", "r1"] and receiver.counts["refused_undecodable"] == 0


def test_a_fault_in_the_column_reader_costs_no_span(
    receiver: OtlpReceiver, stub: trace_service_pb2_grpc.TraceServiceStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the fast reader (an IndexError, say) made the export undecodable, refused whole."""

    def broken(*args: Any) -> Any:
        raise IndexError("a bug in the column reader")

    monkeypatch.setattr(otlp, "decode_rows", broken)
    now = time.time()
    response = stub.Export(export(span(0, now), span(1, now, gen_ai__usage__prompt_tokens=-1)), timeout=5)
    assert response.partial_success.rejected_spans == 0  # the full decode checks at the handler
    _, infos = receiver.due(0.0)
    assert [i.request_id for i in infos] == ["r0"]
    assert receiver.counts["internal_errors"] == 1 and receiver.counts["refused_undecodable"] == 0


@pytest.mark.parametrize("ids", [(bytes(16), bytes(8)), (b"", b""), (bytes(16), b"\x01" * 8)])
def test_spans_with_invalid_ids_are_not_taken_for_one_another(
    receiver: OtlpReceiver, stub: trace_service_pb2_grpc.TraceServiceStub, ids: tuple[bytes, bytes]
) -> None:
    """All-zero or empty ids (OTLP's invalid ids) were one retry-check key: a second request's span
    with them was refused as a duplicate of the first. Such spans are not checked as retries; the
    span handler still refuses a request twice."""
    now = time.time()
    first, second, again = span(0, now), span(1, now), span(0, now)
    for s in (first, second, again):
        s.trace_id, s.span_id = ids
    response = stub.Export(export(first, second), timeout=5)
    assert not response.HasField("partial_success")
    retry = stub.Export(export(again), timeout=5)  # an exporter's retry of the first: taken in
    assert not retry.HasField("partial_success")
    _, infos = receiver.due(0.0)
    assert sorted(i.request_id for i in infos) == ["r0", "r1"]
    assert receiver.counts["rejected_duplicate"] == 1  # the handler's: r0 was handled
