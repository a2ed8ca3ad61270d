"""A string that is not UTF-8 (proto3 forbids it) in one span costs that span only, not its export.

protobuf refuses such an export whole; OTel's exporters do not send an export refused as
INVALID_ARGUMENT again, so its good spans were lost for good. The receiver reads an export's
wire format first (every string as bytes) and refuses only the spans it cannot read.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.otlp_decode import decode_export
from sidecar.taps.span_rows import LeanExport
from sidecar.taps.vllm_spans import VllmSpanHandler
from tests.sidecar.taps.test_otlp_hostile import export, span

MARK = "XXXX"  # replaced in the serialized export by four bytes that are not UTF-8
NOT_UTF8 = b"\xc3\x28\xa0\xa1"


def poisoned(request: trace_service_pb2.ExportTraceServiceRequest) -> bytes:
    payload: bytes = request.SerializeToString()
    assert payload.count(MARK.encode()) >= 1
    return payload.replace(MARK.encode(), NOT_UTF8)


def rows_receiver() -> OtlpReceiver:
    """The vLLM handler reading llm_request spans as columns (the lean decode)."""
    return OtlpReceiver([VllmSpanHandler(lambda unix_s: unix_s)])


def whole_receiver() -> OtlpReceiver:
    """The vLLM handler taking whole spans (as when spans are forwarded upstream): the full decode."""
    return OtlpReceiver([VllmSpanHandler(lambda unix_s: unix_s, on_span=lambda rid, s: None)])


def ids(receiver: OtlpReceiver) -> list[str]:
    _, infos = receiver.due(0.0)
    return sorted(i.request_id for i in infos)


@pytest.mark.parametrize("make", [rows_receiver, whole_receiver])
def test_a_request_id_that_is_not_utf8_refuses_that_span_and_keeps_its_neighbours(
    make: Callable[[], OtlpReceiver],
) -> None:
    receiver = make()
    now = time.time()
    bad = span(1, now, gen_ai__request__id=f"chatcmpl-{MARK}")
    refused = receiver.receive(poisoned(export(span(0, now), bad, span(2, now))))
    assert refused == {"undecodable_span": 1}
    assert ids(receiver) == ["r0", "r2"]
    assert receiver.counts["rejected_undecodable_span"] == 1 and receiver.counts["received"] == 3


def test_a_span_read_attribute_by_attribute_with_an_id_not_utf8_is_refused_alone() -> None:
    """A wanted key twice sends a span to the exact read (protobuf's KeyValue), which refuses the id."""
    receiver = rows_receiver()
    now = time.time()
    bad = span(1, now, gen_ai__request__id=f"chatcmpl-{MARK}")
    bad.attributes.append(KeyValue(key="gen_ai.usage.completion_tokens", value=AnyValue(int_value=7)))
    refused = receiver.receive(poisoned(export(span(0, now), bad, span(2, now))))
    assert refused == {"undecodable_span": 1} and ids(receiver) == ["r0", "r2"]


def test_another_kind_of_span_not_utf8_is_refused_alone_beside_llm_request_spans() -> None:
    receiver = rows_receiver()
    now = time.time()
    client = Span(
        trace_id=(7).to_bytes(16, "big"),
        span_id=(7).to_bytes(8, "big"),
        name="client",
        start_time_unix_nano=int(now * 1e9),
        end_time_unix_nano=int((now + 0.5) * 1e9),
        attributes=[KeyValue(key="jouletrace.task", value=AnyValue(string_value=MARK))],
    )
    refused = receiver.receive(poisoned(export(span(0, now), client, span(2, now))))
    assert refused == {"undecodable_span": 1} and ids(receiver) == ["r0", "r2"]


def test_a_resource_not_utf8_refuses_its_spans_and_keeps_the_other_resources() -> None:
    receiver = whole_receiver()
    now = time.time()
    name = KeyValue(key="service.name", value=AnyValue(string_value=MARK))
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[name]),
                scope_spans=[ScopeSpans(spans=[span(0, now), span(1, now)])],
            ),
            ResourceSpans(scope_spans=[ScopeSpans(spans=[span(2, now)])]),
        ]
    )
    assert receiver.receive(poisoned(request)) == {"undecodable_span": 2}
    assert ids(receiver) == ["r2"]


def test_an_export_that_is_not_protobuf_is_still_refused_whole() -> None:
    receiver = rows_receiver()
    with pytest.raises(Exception, match="Error parsing message"):
        receiver.receive(b"\xff\xff\xff\xff not protobuf")


def test_over_grpc_the_export_is_answered_ok_with_the_span_in_partial_success() -> None:
    receiver = OtlpReceiver([VllmSpanHandler(lambda unix_s: unix_s)], host="127.0.0.1", port=0)
    receiver.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{receiver.port}")
    try:
        raw = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=lambda b: b,
            response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
        )
        now = time.time()
        response = raw(
            poisoned(export(span(0, now), span(1, now, gen_ai__request__id=f"chatcmpl-{MARK}"))), timeout=5
        )
    finally:
        channel.close()
        receiver.stop()
    assert response.partial_success.rejected_spans == 1
    assert "undecodable_span" in response.partial_success.error_message
    assert ids(receiver) == ["r0"] and receiver.counts["refused_undecodable"] == 0


def test_one_bad_span_decodes_its_resource_once_and_its_spans_share_it() -> None:
    """The span-by-span decode read the resource again for each span: a 4,000-attribute resource with
    200 spans cost 200 decodes of it and held 200 copies."""
    now = time.time()
    big = Resource(attributes=[KeyValue(key=f"k{i}", value=AnyValue(int_value=i)) for i in range(2000)])
    spans = [span(i, now) for i in range(50)]
    spans[7] = span(7, now, gen_ai__request__id=f"chatcmpl-{MARK}")
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=big, scope_spans=[ScopeSpans(spans=spans)])]
    )
    payload = poisoned(request)
    decoded, bad = decode_export(payload, LeanExport.FromString(payload))
    assert (
        bad == 1
        and len(decoded) == 49
        and {d.attributes["gen_ai.request.id"] for d in decoded}
        == {f"chatcmpl-r{i}" for i in range(50) if i != 7}
    )
    assert len({id(d.resource) for d in decoded}) == 1 and decoded[0].resource["k1999"] == 1999
