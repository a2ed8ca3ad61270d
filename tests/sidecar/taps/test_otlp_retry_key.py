"""The retry check's key is (trace id, span id, name): a span of another kind with a good span's
ids is not taken for its retry, over real gRPC, whichever way each span is decoded."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sidecar.taps.diffusion import DiffusionSpanHandler
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.otlp_decode import row_key, span_key
from sidecar.taps.vllm_spans import VllmSpanHandler
from tests.sidecar.taps.test_otlp_hostile import export, span
from tests.support import work_events


@pytest.fixture
def stub() -> Iterator[tuple[OtlpReceiver, trace_service_pb2_grpc.TraceServiceStub]]:
    rec = OtlpReceiver(
        [VllmSpanHandler(lambda unix_s: unix_s), DiffusionSpanHandler(lambda unix_s: unix_s)],
        host="127.0.0.1",
        port=0,
    )
    rec.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{rec.port}")
    yield rec, trace_service_pb2_grpc.TraceServiceStub(channel)
    channel.close()
    rec.stop()


def _forged(good: Span, name: str) -> Span:
    """A span of another kind carrying ``good``'s ids (and nothing a handler reads)."""
    return Span(
        trace_id=good.trace_id,
        span_id=good.span_id,
        name=name,
        start_time_unix_nano=good.start_time_unix_nano,
        end_time_unix_nano=good.end_time_unix_nano,
    )


def test_a_span_of_another_name_with_a_good_spans_ids_does_not_make_it_a_duplicate(
    stub: tuple[OtlpReceiver, trace_service_pb2_grpc.TraceServiceStub],
) -> None:
    receiver, client = stub
    now = time.time()
    good0, good1 = span(0, now), span(1, now)
    client.Export(export(_forged(good1, "evil")), timeout=5)  # an export before the good one
    answer = client.Export(export(good0, _forged(good0, "evil"), good1), timeout=5)  # after it, same export
    assert answer.partial_success.rejected_spans == 0
    events, infos = receiver.due(0.0)
    assert sorted(i.request_id for i in infos) == ["r0", "r1"] and len(work_events(events)) == 4
    retry = client.Export(export(good0, _forged(good0, "evil")), timeout=5)  # a real retry is still one
    assert retry.partial_success.rejected_spans == 2 and receiver.counts["rejected_duplicate"] == 2


def test_a_span_decoded_whole_and_as_a_row_has_one_key() -> None:
    trace, sid = bytes(range(1, 17)), bytes(range(1, 9))
    assert span_key(trace.hex(), sid.hex(), "llm_request") == row_key(trace, sid, b"llm_request")
    assert span_key(trace.hex(), sid.hex(), "llm_request") != span_key(trace.hex(), sid.hex(), "other")
    assert span_key("ab", "cd", "x") == row_key(b"\xab", b"\xcd", b"x") == "ab:cd:x"  # ids of the wrong size
    assert span_key("0" * 32, sid.hex(), "x") is None and row_key(trace, b"", b"x") is None


@pytest.mark.parametrize("twin_first", [True, False])
def test_an_id_less_twin_of_a_good_span_in_its_export_is_the_duplicate_not_the_good_span(
    stub: tuple[OtlpReceiver, trace_service_pb2_grpc.TraceServiceStub], twin_first: bool
) -> None:
    """An ``llm_request`` span without a request id, sent with a good span's ids and name, is decoded
    whole (no row handler reads it), the good one as a row: the row is the span, the twin its repeat."""
    receiver, client = stub
    now = time.time()
    good = span(0, now)
    twin = _forged(good, "llm_request")
    spans = [twin, good, span(1, now)] if twin_first else [good, twin, span(1, now)]
    answer = client.Export(export(*spans), timeout=5)
    assert answer.partial_success.rejected_spans == 1 and receiver.counts["rejected_duplicate"] == 1
    events, infos = receiver.due(0.0)
    assert sorted(i.request_id for i in infos) == ["r0", "r1"] and len(work_events(events)) == 4
