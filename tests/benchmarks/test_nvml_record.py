"""``benchmarks/nvml_record.py --dry-run`` (fake NVML, a CPU stand-in for the load) on a short schedule:
it polls every 10 ms, writes the trace, one CSV a phase, the load's intervals and a summary that agree
with each other, the fake counter's 100 ms updates and the load's power show in the phases, and
``--analyze`` recomputes the summary's figures from the CSVs it wrote."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks.bench_module import load_bench, run_bench

SCALE = 0.05  # the phases 0.5 + 1 + 1 + 1 + 0.1 s


@pytest.mark.integration
def test_a_dry_run_writes_a_trace_its_phases_load_and_summary_that_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rec"
    stdout = run_bench("nvml_record", ["--dry-run", "--scale", str(SCALE), "--out", str(out)], timeout_s=60)
    recorded = re.search(r"^recorded (\d+) polls in \S+ s -> (.+)$", stdout, re.MULTILINE)
    assert recorded is not None and Path(recorded.group(2)) == out
    trace, record = load_bench("nvml_trace"), load_bench("nvml_record")
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    rows = trace.read_csv(out / "nvml_x100_full.csv")
    assert int(recorded.group(1)) == summary["polls"] == len(rows)

    schedule = record.phase_schedule(SCALE)
    end_s = schedule[-1][2]
    assert [p["phase"] for p in summary["schedule"]] == list(trace.PHASE_NAMES)
    assert abs(summary["polls"] + summary["missed_deadlines"] - end_s / trace.POLL_S) <= 1  # every 10 ms
    per_phase = {p: len(trace.read_csv(out / f"nvml_x100_{p}.csv")) for p in trace.PHASE_NAMES}
    assert sum(per_phase.values()) == len(rows) and all(n > 0 for n in per_phase.values())

    counter = summary["counter"]
    assert counter["backwards_steps"] == 0
    assert counter["mean_update_period_ms"] == pytest.approx(100.0, abs=5.0)  # the fake's 100 ms counter
    assert abs(counter["updates"] - end_s / 0.1) <= 2
    power = {p: summary["phases"][p]["mean_power_w"] for p in trace.PHASE_NAMES}
    assert power["idle"] == pytest.approx(70.0, abs=10.0)  # the fake's idle power (a late poll: the next)
    assert power["idle"] < power["mm4096"] < power["mm16384"]  # a 4096 load draws less than a 16384 one

    bounds = {name: (a, b) for name, a, b in schedule}
    with (out / "nvml_x100_load.csv").open() as f:
        load = [ln.split(",") for ln in f if ln[:1].isalpha() and not ln.startswith("phase,")]
    assert {p for p, *_ in load} == {"mm4096", "mm16384", "bursty"}
    for phase, on_s, off_s, size, matmuls in load:
        a, b = bounds[phase]
        assert a - 1e-6 <= float(on_s) < float(off_s) <= b + 0.2  # in its phase (ends after its matmuls)
        assert int(size) == trace.LOAD_SPEC[phase][0] and int(matmuls) > 0

    cmd = ["--analyze", str(out / "nvml_x100_full.csv"), "--load", str(out / "nvml_x100_load.csv")]
    assert record.main(cmd) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["polls"] == summary["polls"] and again["counter"] == counter
    for phase in trace.PHASE_NAMES:
        mine, theirs = again["phases"][phase], summary["phases"][phase]
        assert mine.pop("load", {}).get("matmuls") == theirs.pop("load", {}).get("matmuls")
        assert mine == theirs
