"""Conservation over the run and the loadgen's lag, on hand-built results and sidecar records."""

from __future__ import annotations

import pytest

from loadgen.conservation import client_lag, conservation, last_end_s
from loadgen.records import Request, Result

T0_UNIX_S = 1000.0
OFFSET_S = 500.0  # sidecar monotonic = run clock + 500


def _result(i: int, start_s: float, end_s: float, energy_j: float, seen_late_s: float = 0.01) -> Result:
    r = Result(Request(id=f"r{i}", task="chat", api="chat", path="/v1/chat/completions", body={}), 0.0)
    r.sent_s, r.first_token_s, r.finished_s = start_s, start_s + 0.1, end_s + seen_late_s
    r.energy = {
        "energy_j": energy_j, "final": True, "start_s": start_s + OFFSET_S, "end_s": end_s + OFFSET_S,
        "end_unix_s": T0_UNIX_S + end_s,
    }  # fmt: skip
    return r


SAMPLES = [(float(t), 10.0 * t) for t in range(-2, 21)]  # 10 W device


def test_requests_plus_idle_against_the_device_energy_between_the_idle_readings() -> None:
    results = [_result(0, 1.0, 9.0, 60.0), _result(1, 2.0, 12.0, 70.0)]
    idle = [(-1.0, 5.0), (5.0, 9.0), (15.0, 5.0 + 60.0)]  # 60 J idle from -1 s to 15 s
    out = conservation(results, SAMPLES, idle, T0_UNIX_S)
    assert out["reason"] == "" and out["device_j"] == pytest.approx(160.0)
    assert out["requests_j"] == pytest.approx(130.0) and out["idle_j"] == pytest.approx(60.0)
    assert out["error"] == pytest.approx(190.0 / 160.0 - 1.0)


def test_no_figure_when_the_idle_readings_do_not_bracket_every_request() -> None:
    results = [_result(0, 1.0, 16.0, 60.0)]
    out = conservation(results, SAMPLES, [(-1.0, 0.0), (15.0, 10.0)], T0_UNIX_S)
    assert out["error"] is None and "bracket" in out["reason"]
    out = conservation(results, SAMPLES[5:], [(-1.0, 0.0), (17.0, 10.0)], T0_UNIX_S)
    assert out["error"] is None and "does not cover" in out["reason"]


def test_the_last_end_is_on_the_runs_clock_and_skips_requests_without_times() -> None:
    timeless = _result(2, 0.0, 30.0, 1.0)
    timeless.energy = {"energy_j": 1.0, "final": True}
    assert last_end_s([_result(0, 1.0, 9.0, 1.0), _result(1, 2.0, 12.0, 1.0), timeless], T0_UNIX_S) == 12.0
    assert last_end_s([timeless], T0_UNIX_S) is None


def test_client_lag_is_the_loadgens_finish_minus_the_sidecars() -> None:
    results = [_result(i, 1.0, 5.0, 1.0, seen_late_s=0.01 * i) for i in range(101)]
    lag = client_lag(results, T0_UNIX_S)
    assert lag["n"] == 101 and lag["p50"] == pytest.approx(0.5) and lag["max"] == pytest.approx(1.0)
    assert client_lag([], T0_UNIX_S)["p99"] is None
