"""The study's rules: the 85 % running-batch rule (not comparable, with the reason) and the window rule."""

from __future__ import annotations

import pytest

from loadgen.analysis import analyse_phase
from loadgen.rules import WINDOW_RULE, comparability, running_profile
from tests.loadgen.test_analysis import _result

POWER = [(t / 10, 40.0 * t / 10) for t in range(0, 1500)]


def test_a_full_batch_run_is_comparable_and_keeps_the_study_figure() -> None:
    results = [_result(i, 3.0 * i, 3.0 * i + 12.0, energy=120.0) for i in range(30)]
    out = analyse_phase(results, POWER, batch_cap=4, unit="token")
    assert out["window"]["duration_s"] >= 20
    assert out["comparable"] is True and out["not_comparable_reason"] == ""
    assert out["j_per_unit_study"] == out["j_per_unit_window"] > 0


def test_a_run_below_85_percent_of_b_is_not_comparable_and_never_shown_as_the_study_figure() -> None:
    # 4 overlap at a time, but the server's cap is 8: mean running batch ~4 < 0.85 * 8
    results = [_result(i, 3.0 * i, 3.0 * i + 12.0, energy=120.0) for i in range(30)]
    out = analyse_phase(results, POWER, batch_cap=8, unit="token")
    assert out["window"]["kind"] == "steady-state"
    assert out["comparable"] is False
    assert out["j_per_unit_study"] is None
    assert out["j_per_unit_window"] == pytest.approx(out["window_energy_j"] / out["window_units"])
    reason = out["not_comparable_reason"]
    assert "85 % of B=8" in reason and "drops" in reason


def test_a_run_without_a_steady_state_window_is_not_comparable_with_the_windows_reason() -> None:
    results = [_result(i, 0.1, 1.0 + i, energy=5.0) for i in range(4)]
    out = analyse_phase(results, POWER, batch_cap=3, unit="token")
    assert out["comparable"] is False and "B+2" in out["not_comparable_reason"]
    assert out["j_per_unit_study"] is None


def test_short_dips_while_a_request_is_replaced_do_not_close_the_window_and_count_in_the_mean() -> None:
    # B = 2: two streams; each request runs 10 s, its replacement's first token comes 0.5 s later
    results = []
    for lane in range(2):
        for k in range(6):
            start = lane * 0.2 + k * 10.5
            results.append(_result(10 * lane + k, start, start + 10.0))
    out = analyse_phase(results, POWER, batch_cap=2, unit="token")
    window = out["window"]
    assert window["kind"] == "steady-state"
    assert window["duration_s"] > 20.0  # the dips did not end it
    running = out["running"]
    assert running["dips"] >= 3 and running["longest_dip_s"] == pytest.approx(0.5, abs=0.25)
    assert running["mean_batch"] == pytest.approx(2 * 10.0 / 10.5, rel=0.06)  # dips count in the mean
    assert out["comparable"] is True  # 1.9 >= 0.85 * 2


def test_a_window_shorter_than_the_studys_20_s_is_not_comparable() -> None:
    results = [_result(i, 0.5 * i, 0.5 * i + 2.0, energy=20.0) for i in range(20)]
    out = analyse_phase(results, POWER, batch_cap=4, unit="token")
    assert out["window"]["kind"] == "steady-state" and out["window"]["duration_s"] < 20
    assert out["comparable"] is False and "< 20 s (the study's minimum)" in out["not_comparable_reason"]


def test_running_profile_of_a_constant_batch_has_no_dip() -> None:
    results = [_result(i, 0.0, 10.0) for i in range(3)]
    p = running_profile(results, 1.0, 9.0, 3)
    assert p == {"mean_batch": pytest.approx(3.0), "below_cap_fraction": 0.0, "dips": 0, "longest_dip_s": 0.0}


def test_diffusion_phases_are_comparable_when_a_timed_batch_was_measured() -> None:
    assert comparability({"unit": "image", "batches_measured": 3})[0] is True
    ok, why = comparability({"unit": "video", "batches_measured": 0})
    assert ok is False and "timed batch" in why


def test_the_window_rule_names_the_dips_and_the_85_percent_rule() -> None:
    assert (
        "dips" in WINDOW_RULE and "85 %" in WINDOW_RULE and "(N-B-1)" in WINDOW_RULE and "20 s" in WINDOW_RULE
    )
