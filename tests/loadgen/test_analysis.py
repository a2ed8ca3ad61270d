"""The study's steady-state window, window energy, J/token two ways, and failure accounting."""

from __future__ import annotations

import pytest

from loadgen.analysis import analyse_phase, energy_at, mean_batch, power_series, steady_window, task_summary
from loadgen.records import Request, Result


def _result(
    i: int, first: float, end: float, tokens: int = 10, energy: float | None = None, error: str | None = None
) -> Result:
    req = Request(
        id=f"r{i}",
        task="lm-arena-chat",
        api="chat",
        path="/v1/chat/completions",
        body={},
        target_output_tokens=tokens,
    )
    r = Result(
        request=req,
        target_s=0.0,
        sent_s=0.0,
        first_token_s=first,
        finished_s=None if error else end,
        error=error,
        output_tokens=tokens,
        output_units=float(tokens),
    )
    step = (end - first) / max(1, tokens - 1)
    r.chunk_s = [first + k * step for k in range(tokens)]
    r.chunk_tokens = [1.0] * tokens
    if energy is not None:
        r.energy = {
            "energy_j": energy,
            "phase_j": {"prefill": 0.0, "decode": energy},
            "final": True,
            "approximate": False,
            "energy_source": "estimate",
        }
    return r


def test_window_opens_at_the_bth_first_token_and_closes_at_the_n_minus_b_minus_1th_finish() -> None:
    # 10 requests, B = 3: first tokens at 0.1 * i, finishes at 1 + i
    results = [_result(i, 0.1 * i, 1.0 + i) for i in range(10)]
    w = steady_window(results, batch_cap=3)
    assert w is not None and w.kind == "steady-state"
    assert w.open_s == pytest.approx(0.2)  # the 3rd first token
    assert w.close_s == pytest.approx(6.0)  # the 6th (= 10 - 3 - 1) finish


def test_too_few_requests_for_the_batch_cap_fall_back_to_the_full_run_and_say_why() -> None:
    results = [_result(i, 0.1, 1.0 + i) for i in range(4)]
    w = steady_window(results, batch_cap=3)
    assert w is not None and w.kind == "full-run" and "B+2" in w.reason
    assert (w.open_s, w.close_s) == (0.0, 4.0)


def test_a_steady_window_shorter_than_the_minimum_falls_back_to_the_full_run() -> None:
    results = [_result(i, 0.1 * i, 1.0 + i) for i in range(10)]
    w = steady_window(results, batch_cap=3, min_window_s=10.0)
    assert w is not None and w.kind == "full-run" and "< 10 s minimum" in w.reason
    assert (w.open_s, w.close_s) == (0.0, 10.0)


def test_failed_requests_are_not_part_of_the_window() -> None:
    ok = [_result(i, 0.1 * i, 1.0 + i) for i in range(10)]
    failed = [_result(99, 0.0, 0.5, error="HTTP 500: boom")]
    assert steady_window(ok + failed, 3) == steady_window(ok, 3)


def test_energy_at_interpolates_between_counter_samples_and_refuses_to_extrapolate() -> None:
    samples = [(0.0, 100.0), (1.0, 150.0), (3.0, 250.0)]
    assert energy_at(samples, 0.5) == pytest.approx(125.0)
    assert energy_at(samples, 2.0) == pytest.approx(200.0)
    assert energy_at(samples, 3.5) is None
    assert power_series(samples) == [(0.5, 50.0), (2.0, 50.0)]


def test_study_j_per_token_and_per_request_sum_agree_when_attribution_conserves_energy() -> None:
    # 20 requests of 10 tokens over [i*0.5, i*0.5 + 2]; power 40 W; each request's energy =
    # its share of power while it runs (4 overlap at any time in steady state -> 10 W each * 2 s = 20 J)
    results = [_result(i, 0.5 * i, 0.5 * i + 2.0, energy=20.0) for i in range(20)]
    samples = [(t / 10, 40.0 * t / 10) for t in range(0, 130)]
    out = analyse_phase(results, samples, batch_cap=4, unit="token")
    assert out["window"]["kind"] == "steady-state"
    assert out["window_energy_j"] == pytest.approx(40.0 * out["window"]["duration_s"])
    assert out["j_per_unit_window"] == pytest.approx(out["window_energy_j"] / out["window_units"])
    assert out["per_request_vs_study"] == pytest.approx(0.0, abs=0.05)
    assert out["mean_batch"] == pytest.approx(4.0, rel=0.05)
    assert out["comparable"] is False and "20 s" in out["not_comparable_reason"]  # a 7.5 s window


def test_failures_are_counted_by_kind_and_excluded_from_energy() -> None:
    results = [_result(i, 0.5 * i, 0.5 * i + 2.0, energy=20.0) for i in range(10)]
    results.append(_result(50, 0.0, 1.0, error="HTTP 500: injected"))
    results.append(_result(51, 0.0, 1.0, error="timeout after 5 s"))
    out = analyse_phase(results, [(0.0, 0.0), (10.0, 400.0)], batch_cap=2, unit="token")
    assert (out["requests"], out["ok"], out["failed"]) == (12, 10, 2)
    assert out["errors"] == {"HTTP 500": 1, "timeout after 5 s": 1}
    assert out["requests_with_energy"] == 10


def test_task_summary_reports_energy_per_response_and_output_lengths() -> None:
    results = [_result(i, 0.0, 1.0, tokens=10 + i, energy=5.0 + i) for i in range(5)]
    s = task_summary(results, "lm-arena-chat", "token")
    assert s["energy_per_response_j"]["p50"] == 7.0
    assert s["j_per_unit"] == pytest.approx(sum(5.0 + i for i in range(5)) / sum(10 + i for i in range(5)))
    assert s["output_tokens"]["p50"] == 12.0
    assert s["warmup_split"] == 0


def test_task_summary_counts_the_records_split_before_the_sidecars_first_fit() -> None:
    results = [_result(i, 0.0, 1.0, energy=5.0) for i in range(4)]
    for r, quality in zip(results, ("warmup", "warmup", "ok"), strict=False):  # the 4th says none
        assert r.energy is not None
        r.energy["fit_quality"] = quality
    assert task_summary(results, "lm-arena-chat", "token")["warmup_split"] == 2


def test_mean_batch_counts_requests_between_first_token_and_finish() -> None:
    results = [_result(0, 0.0, 2.0), _result(1, 1.0, 2.0)]
    w = steady_window(results, batch_cap=5)
    assert w is not None
    assert mean_batch(results, w) == pytest.approx(1.5)
