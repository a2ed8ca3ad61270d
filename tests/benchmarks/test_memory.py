"""benchmarks/memory.py's inputs: its patched exports are vLLM spans the real receiver and span handler
take whole, each with its own ids; its replay trace is an hour the replay meter reads."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sidecar.attribution.events import WorkEvent
from sidecar.meters.replay import ReplayMeter
from sidecar.taps.otlp import OtlpReceiver, decode_request
from sidecar.taps.spans import WallToMono
from sidecar.taps.vllm_spans import VllmSpanHandler

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "memory.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("memory_bench", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_patched_exports_are_whole_vllm_spans_with_unique_ids() -> None:
    bench = _bench()
    template = bench.export_template(time.time())
    receiver = OtlpReceiver([VllmSpanHandler(WallToMono())])
    for batch in (1, 2):
        payload = template.replace(bench._BATCH_MARK, b"%012d" % batch)
        payload = payload.replace(bench._TRACE_MARK, batch.to_bytes(8, "big"))
        assert not receiver.accept(decode_request(ExportTraceServiceRequest.FromString(payload)))
    events, infos = receiver.due(0.0)
    assert len(infos) == 2 * bench.SPANS_PER_EXPORT and len({i.request_id for i in infos}) == len(infos)
    worked = {e.request_id for e in events if isinstance(e, WorkEvent)}
    assert worked == {i.request_id for i in infos}  # every span made its prefill and decode work
    assert receiver.counts["received"] == len(infos) and not receiver.dropped and not receiver.ignored


def test_the_replay_trace_is_an_hour_then_a_tail_at_450_w(tmp_path: Path) -> None:
    bench = _bench()
    rows = bench.write_trace(tmp_path / "t.csv", 3600.0, 60.0, tail_s=10.0)
    meter = ReplayMeter(tmp_path / "t.csv")
    readings = list(meter.readings())
    assert len(readings) == rows == 36_000 + 100
    hour = [r for r in readings if r.t_s < 3600.0]
    energy_wh = (hour[-1].energy_j[0] - readings[0].energy_j[0]) / 3600.0
    assert abs(energy_wh - (0.5 * 90.0 + 0.5 * 450.0)) < 0.1  # idle and busy minutes alternate
