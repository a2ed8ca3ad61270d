"""The OTLP/gRPC receiver: real gRPC, real OTel SDK exporter on the client side."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from sidecar.attribution.events import Phase, WorkEvent
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import ReceivedSpan, TapOutput


class Recorder:
    """Claims spans named 'work' and makes one decode event from each."""

    def __init__(self) -> None:
        self.seen: list[ReceivedSpan] = []

    def handle(self, span: ReceivedSpan, out: TapOutput) -> bool:
        if span.name != "work":
            return False
        self.seen.append(span)
        out.events.append(WorkEvent(str(span.attributes["rid"]), 0.0, 1.0, Phase.DECODE, 1.0))
        return True


@pytest.fixture
def receiver() -> OtlpReceiver:
    rec = OtlpReceiver([Recorder()], host="127.0.0.1", port=0, max_message_bytes=64 * 1024)
    rec.start()
    yield rec
    rec.stop()


def test_spans_from_the_otel_sdk_exporter_become_work_and_foreign_spans_are_counted(
    receiver: OtlpReceiver,
) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "client"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{receiver.port}", insecure=True))
    )
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("work", attributes={"rid": "req-1", "n": 3, "x": 1.5}):
        pass
    with tracer.start_as_current_span("something-else"):
        pass
    provider.shutdown()
    events, infos = receiver.due(0.0)
    assert [e.request_id for e in events] == ["req-1"] and infos == []
    assert receiver.received == 2 and receiver.ignored == 1
    span = receiver.handlers[0].seen[0]  # type: ignore[attr-defined]
    assert span.attributes == {"rid": "req-1", "n": 3, "x": 1.5}
    assert span.resource["service.name"] == "client"
    assert len(span.trace_id) == 32 and span.end_unix_s >= span.start_unix_s > 1.6e9


def test_oversized_and_malformed_payloads_get_a_grpc_error_and_the_server_stays_up(
    receiver: OtlpReceiver,
) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{receiver.port}")
    raw = channel.unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.RpcError) as too_big:
        raw(b"\x0a" + b"\xff" * (128 * 1024))
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as garbage:
        raw(b"\xff\xff\xff\xff not protobuf")
    assert garbage.value.code() != grpc.StatusCode.OK
    stub = trace_service_pb2_grpc.TraceServiceStub(channel)
    stub.Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=5)  # still serving
    channel.close()


def test_a_full_queue_drops_and_counts_instead_of_growing() -> None:
    rec = OtlpReceiver([Recorder()], max_queued_spans=2, wall=lambda: 1.0)
    spans = [ReceivedSpan("t", f"s{i}", "", "work", 0.0, 1.0, {"rid": f"r{i}"}) for i in range(5)]
    rec.accept(spans)
    events, _ = rec.due(0.0)
    assert len(events) == 2 and rec.dropped == 3
