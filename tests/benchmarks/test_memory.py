"""benchmarks/memory.py's inputs: its replay trace is an hour the replay meter reads. (Its span flood is
``benchmarks/otlp_flood.py``'s exports, held to vLLM's shape in tests/benchmarks/test_ingest_grpc.py.)"""

from __future__ import annotations

from pathlib import Path

from sidecar.meters.replay import ReplayMeter
from tests.benchmarks.bench_module import load_bench


def test_the_replay_trace_is_an_hour_then_a_tail_at_450_w(tmp_path: Path) -> None:
    bench = load_bench("memory", "memory_bench")
    rows = bench.write_trace(tmp_path / "t.csv", 3600.0, 60.0, tail_s=10.0)
    meter = ReplayMeter(tmp_path / "t.csv")
    readings = list(meter.readings())
    assert len(readings) == rows == 36_000 + 100
    hour = [r for r in readings if r.t_s < 3600.0]
    energy_wh = (hour[-1].energy_j[0] - readings[0].energy_j[0]) / 3600.0
    assert abs(energy_wh - (0.5 * 90.0 + 0.5 * 450.0)) < 0.1  # idle and busy minutes alternate
