"""benchmarks/ingest_grpc.py's client (benchmarks/otlp_flood.py): pre-serialised exports, stamped
at send time with unique ids and fresh times, are what vLLM sends and what the real receiver and
span handler accept whole."""

from __future__ import annotations

import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sidecar.config import load_config
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import WallToMono
from sidecar.taps.vllm_spans import SPAN_ATTRIBUTES, VllmSpanHandler
from tests.benchmarks.bench_module import load_bench


def test_stamped_exports_carry_vllm_spans_with_unique_ids_ending_just_before_the_send() -> None:
    bench = load_bench("otlp_flood", "otlp_flood_bench")
    (export,) = bench.build_exports(1)
    now_ns = time.time_ns()
    first = ExportTraceServiceRequest.FromString(export.stamped(now_ns, 0))
    again = ExportTraceServiceRequest.FromString(export.stamped(now_ns, bench.EXPORT_SPANS))
    spans = [s for r in (first, again) for s in r.resource_spans[0].scope_spans[0].spans]
    assert len(spans) == 2 * bench.EXPORT_SPANS
    ids = [next(kv.value.string_value for kv in s.attributes if kv.key == "gen_ai.request.id") for s in spans]
    assert len(set(ids)) == len(ids) and all(i.startswith("chatcmpl-") for i in ids)
    assert len({s.trace_id for s in spans}) == len(spans)
    for s in spans:
        attrs = {kv.key: kv.value for kv in s.attributes}
        assert set(SPAN_ATTRIBUTES.values()) <= set(attrs) and s.name == "llm_request"
        assert 0 <= now_ns - s.end_time_unix_nano <= 20_000_000  # ended within 20 ms before the send
        e2e_ns = attrs["gen_ai.latency.e2e"].double_value * 1e9
        assert abs(s.end_time_unix_nano - s.start_time_unix_nano - e2e_ns) < 2


def test_the_real_receiver_and_span_handler_take_every_span_of_every_stamped_export() -> None:
    bench = load_bench("otlp_flood", "otlp_flood_bench")
    (export,) = bench.build_exports(1)
    handler = VllmSpanHandler(WallToMono())
    receiver = OtlpReceiver([handler], port=0)
    for k in range(3):  # the same pool export, sent three times with new ids
        response = receiver.export(export.stamped(time.time_ns(), k * bench.EXPORT_SPANS), None)
        assert response.partial_success.rejected_spans == 0
    events, infos = receiver.due(0.0)
    assert handler.requests == len(infos) == 3 * bench.EXPORT_SPANS
    assert len({i.request_id for i in infos}) == len(infos) and events
    assert receiver.stats().events[("otlp", "received")] == 3 * bench.EXPORT_SPANS


def test_the_drain_line_gives_the_spans_a_second_the_ticks_hand_on_with_the_knobs_given() -> None:
    bench, side = load_bench("ingest_grpc", "ingest_grpc_bench"), load_bench("ingest_sidecar")
    defaults = load_config({}, environ={})
    line = bench.drain_cap({k: getattr(defaults, k) for k in side.DRAIN_KNOBS}, [])
    assert "none; a ledger file;" in line and "2048 spans a tick, every 0.1 s" in line
    assert line.endswith("at most ~20,480 spans/s")  # the default knobs' ceiling, however cheap a span
    knobs = ["otlp_drain_max_spans=8192", "ledger_path="]
    given = load_config(dict(kv.split("=", 1) for kv in knobs), environ={})
    line = bench.drain_cap({k: getattr(given, k) for k in side.DRAIN_KNOBS}, knobs)
    assert "no ledger file" in line and line.endswith("at most ~81,920 spans/s")
