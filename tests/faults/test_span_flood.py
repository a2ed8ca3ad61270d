"""Fault: a span flood at 10x what the OTLP receiver queues between two ticks, over real gRPC.

The receiver (real gRPC server, vLLM span handler) feeds a sidecar on a fake
monotonic clock (the scripted meter of ``tests/sidecar/test_app_faults.py``: an
NVIDIA GPU cannot run here). Four clients send 10x the queue's capacity between two
ticks: exports that meet a full queue are refused whole with OTLP's retryable
backpressure status (UNAVAILABLE with a ``RetryInfo``) and counted, and so are those
with more spans than the queue has room for; the clients send them again after a tick,
as OTel exporters do, until all are taken. No span is dropped: every one becomes a final
record, the sidecar keeps ticking with energy conserved, and the next normal export is
taken whole (recovery by itself).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from prometheus_client.parser import text_string_to_metric_families

from sidecar.app import Sidecar
from sidecar.config import SidecarConfig
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.vllm_spans import VllmSpanHandler
from tests.sidecar.test_app_faults import ScriptedMeter, poll_for
from tests.support import FakeClock

QUEUE = 1000  # spans the receiver queues between two ticks
FLOOD = 10 * QUEUE
PER_EXPORT = 200


class Clocks:
    """The sidecar's fake monotonic clock, tied to the real wall clock the spans are dated on."""

    def __init__(self) -> None:
        self.mono = FakeClock(100.0)
        self.wall0_s = time.time()

    def to_mono(self, unix_s: float) -> float:
        return unix_s - self.wall0_s + 100.0

    def unix(self) -> float:
        return self.mono.t_s - 100.0 + self.wall0_s


def llm_span(n: int, start_unix_s: float) -> Span:
    attrs: dict[str, Any] = {
        "gen_ai.request.id": f"chatcmpl-f{n}",
        "gen_ai.usage.prompt_tokens": 10,
        "gen_ai.usage.completion_tokens": 5,
        "gen_ai.latency.e2e": 0.2,
        "gen_ai.latency.time_in_model_prefill": 0.05,
        "gen_ai.latency.time_in_model_decode": 0.15,
    }
    return Span(
        trace_id=(n + 1).to_bytes(16, "big"),
        span_id=(n + 1).to_bytes(8, "big"),
        name="llm_request",
        start_time_unix_nano=int(start_unix_s * 1e9),
        end_time_unix_nano=int((start_unix_s + 0.2) * 1e9),
        attributes=[
            KeyValue(key=k, value=AnyValue(string_value=v) if isinstance(v, str) else _num(v))
            for k, v in attrs.items()
        ],
    )


def tap_events(text: bytes) -> dict[tuple[str, str], float]:
    """``jouletrace_tap_events_total`` of a /metrics page: (tap, outcome) -> count."""
    return {
        (s.labels["jouletrace_tap"], s.labels["outcome"]): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if s.name == "jouletrace_tap_events_total"
    }


def _num(x: float) -> AnyValue:
    return AnyValue(int_value=x) if isinstance(x, int) else AnyValue(double_value=x)


def export(first: int, n: int, start_unix_s: float) -> trace_service_pb2.ExportTraceServiceRequest:
    spans = [llm_span(first + i, start_unix_s) for i in range(n)]
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    )


@pytest.fixture
def flooded() -> Iterator[tuple[Clocks, OtlpReceiver, Sidecar, trace_service_pb2_grpc.TraceServiceStub]]:
    clocks = Clocks()
    rx = OtlpReceiver([VllmSpanHandler(clocks.to_mono)], host="127.0.0.1", port=0, max_queued_spans=QUEUE)
    rx.start()
    config = SidecarConfig(meter="sim", settle_s=0.5, split="tokens")
    sidecar = Sidecar(config, ScriptedMeter(clocks.mono), taps=[rx], clock=clocks.mono)
    channel = grpc.insecure_channel(f"127.0.0.1:{rx.port}")
    yield clocks, rx, sidecar, trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
    channel.close()
    rx.stop()
    sidecar.close()


def _send(stub: trace_service_pb2_grpc.TraceServiceStub, e: Any) -> int | None:
    """One export: the spans its response refused (``partial_success``), or None if it was refused
    whole and retryably (UNAVAILABLE with a ``RetryInfo``: an exporter sends it again later)."""
    try:
        answer = stub.Export(e, timeout=30)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.UNAVAILABLE and "otlp_max_queued_spans" in err.details()
        keys = {k for k, _ in err.trailing_metadata()}
        assert {"grpc-status-details-bin", "google.rpc.retryinfo-bin"} <= keys
        return None
    assert answer.partial_success.rejected_spans == 0 or "queue_full" in answer.partial_success.error_message
    return int(answer.partial_success.rejected_spans)


def test_a_flood_beyond_the_queue_is_refused_retryably_counted_and_retried_exports_are_taken(
    flooded: tuple[Clocks, OtlpReceiver, Sidecar, trace_service_pb2_grpc.TraceServiceStub],
) -> None:
    clocks, rx, sidecar, stub = flooded
    poll_for(sidecar, clocks.mono, 1.0)  # ready
    start = clocks.unix()
    waiting = [export(k, PER_EXPORT, start) for k in range(0, FLOOD, PER_EXPORT)]
    dropped, refusals, rounds = 0, 0, 0
    while waiting:  # four exporters at once, nothing drained in a round; then the refused are retried
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda e: _send(stub, e), waiting))
        refused_whole = [e for e, a in zip(waiting, answers, strict=True) if a is None]
        dropped += sum(a for a in answers if a is not None)
        refusals += len(refused_whole)
        assert len(refused_whole) < len(waiting)  # every round takes some: a queue's worth
        waiting, rounds = refused_whole, rounds + 1
        poll_for(sidecar, clocks.mono, 0.05)  # a tick drains the queue
    # a round takes a queue's worth: whole exports that fit, the rest refused whole
    assert rounds >= FLOOD // QUEUE and refusals >= FLOOD // PER_EXPORT - QUEUE // PER_EXPORT
    assert rx.counts["refused_queue_full"] == refusals and rx.counts["dropped"] == dropped == 0

    poll_for(sidecar, clocks.mono, 2.0)  # the queued spans are handled and sealed
    taken = [f"f{n}" for n in range(FLOOD) if sidecar.lookup(f"f{n}") is not None]
    assert len(taken) == FLOOD  # none lost
    assert all(sidecar.lookup(rid)["final"] for rid in taken)  # type: ignore[index]

    later = stub.Export(export(FLOOD, 100, clocks.unix()), timeout=30)  # a normal export after the flood
    assert later.partial_success.rejected_spans == 0
    poll_for(sidecar, clocks.mono, 2.0)
    after = [sidecar.lookup(f"f{n}") for n in range(FLOOD, FLOOD + 100)]
    assert all(rec is not None and rec["final"] and rec["energy_j"] > 0 for rec in after)

    assert sidecar.tick_failures == 0 and rx.counts["internal_errors"] == 0
    totals = sidecar.attributor.totals
    assert totals.measured_j > 0 and abs(totals.conservation_error_j) <= 1e-9 * totals.measured_j
    taps = tap_events(sidecar.exporter.render())  # the self-metric the refusals are exported under
    assert taps[("otlp", "refused_queue_full")] == refusals and taps.get(("otlp", "dropped"), 0) == dropped
    assert taps[("otlp", "received")] == FLOOD + 100
