"""Over real gRPC: an export that does not fit in the span queue's room is refused whole, retryably,
and taken whole when sent again; only one bigger than the whole queue is taken in part."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.vllm_spans import VllmSpanHandler
from tests.sidecar.taps.test_otlp_hostile import export, span


@pytest.fixture
def queue_of_5() -> Iterator[tuple[OtlpReceiver, trace_service_pb2_grpc.TraceServiceStub]]:
    rec = OtlpReceiver([VllmSpanHandler(lambda unix_s: unix_s)], port=0, max_queued_spans=5)
    rec.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{rec.port}")
    yield rec, trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
    channel.close()
    rec.stop(0)


def _request_ids(rec: OtlpReceiver) -> list[str]:
    _, infos = rec.due(0.0)
    return sorted(i.request_id for i in infos)


def test_an_export_over_the_room_left_is_refused_whole_retryably_and_taken_whole_after_a_tick(
    queue_of_5: tuple[OtlpReceiver, trace_service_pb2_grpc.TraceServiceStub],
) -> None:
    rec, stub = queue_of_5
    now = time.time()
    assert (
        stub.Export(export(*(span(i, now) for i in range(2))), timeout=10).partial_success.rejected_spans == 0
    )
    four = export(*(span(i, now) for i in range(10, 14)))
    with pytest.raises(grpc.RpcError) as err:  # room for 3 of 4: nothing of it is kept
        stub.Export(four, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "room for 3 of this export's 4 spans" in err.value.details()
    assert {"grpc-status-details-bin", "google.rpc.retryinfo-bin"} <= {
        k for k, _ in err.value.trailing_metadata()
    }
    assert rec.counts["refused_queue_full"] == 1 and rec.dropped == 0 and rec.counts["received"] == 2
    assert _request_ids(rec) == ["r0", "r1"]  # the tick makes room
    assert stub.Export(four, timeout=10).partial_success.rejected_spans == 0  # the retry: whole, no duplicate
    assert _request_ids(rec) == ["r10", "r11", "r12", "r13"]


def test_an_export_refused_for_room_is_counted_not_decoded(
    queue_of_5: tuple[OtlpReceiver, trace_service_pb2_grpc.TraceServiceStub], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a flood most exports are refused: each costs the lean parse that counts its spans,
    not the decode of its attributes."""
    rec, stub = queue_of_5
    now = time.time()
    stub.Export(export(*(span(i, now) for i in range(2))), timeout=10)
    decoded: list[bytes] = []
    monkeypatch.setattr("sidecar.taps.otlp.decode_rows", lambda payload, *_: decoded.append(payload))
    with pytest.raises(grpc.RpcError) as err:
        stub.Export(export(*(span(i, now) for i in range(10, 14))), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and not decoded
    assert rec.counts["refused_queue_full"] == 1


def test_an_export_bigger_than_the_whole_queue_is_taken_in_part_at_an_empty_one(
    queue_of_5: tuple[OtlpReceiver, trace_service_pb2_grpc.TraceServiceStub],
) -> None:
    """It could never fit: refusing it would refuse it for good. What fits is kept, the rest reported."""
    rec, stub = queue_of_5
    answer = stub.Export(export(*(span(i, time.time()) for i in range(7))), timeout=10)
    assert answer.partial_success.rejected_spans == 2 and "queue_full" in answer.partial_success.error_message
    assert rec.dropped == 2 and len(_request_ids(rec)) == 5


def test_exports_racing_for_the_last_room_never_drop_a_span(
    queue_of_5: tuple[OtlpReceiver, trace_service_pb2_grpc.TraceServiceStub],
) -> None:
    """Eight senders of 2-span exports at once, the queue drained between rounds: each export is
    taken whole or refused whole; every span is taken in the end, none dropped."""
    rec, stub = queue_of_5
    now = time.time()
    waiting = [export(span(2 * k, now), span(2 * k + 1, now)) for k in range(40)]
    taken: list[str] = []

    def send(e: trace_service_pb2.ExportTraceServiceRequest) -> bool:
        try:
            return stub.Export(e, timeout=10).partial_success.rejected_spans == 0
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE
            return False

    while waiting:
        with ThreadPoolExecutor(8) as pool:
            ok = list(pool.map(send, waiting))
        assert any(ok)
        waiting = [e for e, taken_whole in zip(waiting, ok, strict=True) if not taken_whole]
        taken += _request_ids(rec)
    assert rec.dropped == 0 and sorted(taken) == sorted(f"r{i}" for i in range(80))


def test_an_export_that_finds_the_queue_filled_after_its_first_look_is_refused_retryably_not_dropped(
    queue_of_5: tuple[OtlpReceiver, trace_service_pb2_grpc.TraceServiceStub], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gRPC method looks at the room before it reads the export; another exporter may fill the
    queue in between (CI saw it: four senders, one export of 200 reported dropped, which OTel's
    exporters never send again). Refused whole and retryably instead; nothing dropped."""
    rec, stub = queue_of_5
    now = time.time()
    stub.Export(export(*(span(i, now) for i in range(5))), timeout=10)  # the queue is full
    monkeypatch.setattr(rec, "_full", lambda: None)  # the first look saw room: it was taken since
    with pytest.raises(grpc.RpcError) as err:
        stub.Export(export(span(10, now)), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "span queue is full" in err.value.details()
    assert rec.counts["refused_queue_full"] == 1 and rec.dropped == 0 and rec.counts["received"] == 5
    monkeypatch.undo()
    assert _request_ids(rec) == [f"r{i}" for i in range(5)]
    assert stub.Export(export(span(10, now)), timeout=10).partial_success.rejected_spans == 0  # the retry
    assert _request_ids(rec) == ["r10"]
