"""benchmarks/nvml_poll_scale.py's simulation on a few seconds: both schedules see the devices' counter
updates (the baseline, which reads every device each pass, dates each true update once), the
phase-locked reader reads less, the CPU figures are shares of one core, and the last line reports
the phase-locked run."""

from __future__ import annotations

import math
import re

import pytest

from tests.benchmarks.bench_module import load_bench

DEVICES, DURATION_S, WARMUP_S = 8, 8.0, 2.0
ROW = re.compile(
    r"(?P<name>baseline 20ms|phase-locked)\s+dated updates\s+(?P<dated>\d+)\s+"
    r"edge error p50\s+(?P<p50>\S+) ms\s+p99\s+(?P<p99>\S+) ms\s+"
    r"reads/update\s+(?P<reads>\S+)\s+core %\s+(?P<core>\S+)\s+"
    r"energy/update error p50\s+(?P<e50>\S+) p99\s+(?P<e99>\S+) %"
)


def test_both_schedules_date_the_updates_and_the_last_line_is_the_phase_locked_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_bench("nvml_poll_scale")
    argv = ["--devices", str(DEVICES), "--duration-s", str(DURATION_S), "--warmup-s", str(WARMUP_S)]
    monkeypatch.setattr("sys.argv", ["nvml_poll_scale.py", *argv, "--seed", "0"])
    bench.main()
    lines = capsys.readouterr().out.splitlines()
    rows = {m["name"]: m for m in map(ROW.fullmatch, lines) if m is not None}
    assert set(rows) == {"baseline 20ms", "phase-locked"}
    base, locked = (
        {k: float(v) for k, v in rows[name].groupdict().items() if k != "name"}
        for name in ("baseline 20ms", "phase-locked")
    )
    for fig in (base, locked):
        assert all(math.isfinite(v) and v >= 0.0 for v in fig.values())
        assert 0.0 < fig["p50"] <= fig["p99"] < 1e3 * bench.PERIOD_S  # within an update period
        assert fig["e50"] <= fig["e99"]
        assert 0.0 < fig["core"] <= 101.0  # one poll thread: at most a core (a last read may overrun)
    scored = DEVICES * (DURATION_S - WARMUP_S) / bench.PERIOD_S  # true updates after the warm-up
    assert abs(base["dated"] - scored) <= DEVICES  # each update dated once, ± one per device at the ends
    assert 0.5 * scored <= locked["dated"] <= base["dated"]  # back-off: every 2nd update at the least
    assert 0.5 <= locked["reads"] < base["reads"] and locked["core"] < base["core"]
    phases = re.fullmatch(r"phase error per device \(ms, .*\): (.*); unlocks (\d+)", lines[-2])
    assert phases is not None and len(phases.group(1).split()) == DEVICES
    last = re.fullmatch(r"devices (\d+) edge p99 (\S+) ms \| core % (\S+)", lines[-1])
    assert last is not None
    assert int(last.group(1)) == DEVICES
    assert float(last.group(2)) == pytest.approx(locked["p99"], abs=0.01)
    assert float(last.group(3)) == pytest.approx(locked["core"], abs=0.1)
