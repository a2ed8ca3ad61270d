"""benchmarks/memory.py's inputs: its replay trace is an hour the replay meter reads. (Its span flood is
``benchmarks/otlp_flood.py``'s exports, held to vLLM's shape in tests/benchmarks/test_ingest_grpc.py.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from sidecar.meters.replay import ReplayMeter

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "memory.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("memory_bench", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_replay_trace_is_an_hour_then_a_tail_at_450_w(tmp_path: Path) -> None:
    bench = _bench()
    rows = bench.write_trace(tmp_path / "t.csv", 3600.0, 60.0, tail_s=10.0)
    meter = ReplayMeter(tmp_path / "t.csv")
    readings = list(meter.readings())
    assert len(readings) == rows == 36_000 + 100
    hour = [r for r in readings if r.t_s < 3600.0]
    energy_wh = (hour[-1].energy_j[0] - readings[0].energy_j[0]) / 3600.0
    assert abs(energy_wh - (0.5 * 90.0 + 0.5 * 450.0)) < 0.1  # idle and busy minutes alternate
