"""benchmarks/memory.py's inputs: its replay trace is an hour the replay meter reads. (Its span flood is
``benchmarks/otlp_flood.py``'s exports, held to vLLM's shape in tests/benchmarks/test_ingest_grpc.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_the_rss_parts_are_anonymous_memory_and_pages_of_files_and_add_up_to_at_most_the_rss() -> None:
    phases = load_bench("memory_phases")
    pid = os.getpid()
    anon, files = (float(x) for x in re.findall(r"[\d.]+", phases.rss_split(pid)))
    rss = phases.status_mb(pid, "VmRSS")
    assert anon > 0 and files > 0  # an interpreter with NumPy: both are MBs
    assert anon + files <= rss + 0.2  # the third part, shared memory, is the rest (rounding: 0.1 each)


@pytest.mark.integration
def test_the_receive_only_floor_parses_a_short_flood_and_prints_its_peak() -> None:
    script = load_bench("memory").REPO / "benchmarks" / "memory_receive.py"
    out = subprocess.run(
        [sys.executable, str(script), "--flood-s", "1", "--exporters", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    parsed = int(re.search(r"exports parsed (\d+)", out).group(1))  # type: ignore[union-attr]
    assert parsed > 0
    assert re.search(r"^receive only rss MB \d+$", out.splitlines()[-1])
