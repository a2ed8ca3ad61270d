"""Spans give each request's decode count over its window; the shared step clock puts the tokens
where the steps were (slow steps while a long prefill ran), not evenly over the window."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar.taps.step_clock import StepClock
from sidecar.taps.vllm_spans import phase_events


def _observe_true_rate(clock: StepClock, rate, windows) -> None:  # type: ignore[no-untyped-def]
    for t0, t1 in windows:
        ts = np.linspace(t0, t1, 2001)
        clock.observe(t0, t1, float(np.trapezoid(rate(ts), ts)))


def test_segments_follow_a_step_rate_that_halves_in_the_middle() -> None:
    def rate(t):  # type: ignore[no-untyped-def]
        return np.where((t >= 4.0) & (t < 6.0), 50.0, 100.0)

    clock = StepClock(bin_s=0.1, iterations=200, merge_tol=0.0)  # one piece per bin
    rng = np.random.default_rng(0)
    windows = [(a, a + rng.uniform(0.5, 4.0)) for a in rng.uniform(0.0, 8.0, 300)]
    _observe_true_rate(clock, rate, windows)
    segments = clock.segments(2.0, 8.0)
    assert sum(s for _, _, s in segments) == pytest.approx(1.0)
    share_slow = sum(s for a, b, s in segments if a >= 4.0 and b <= 6.0)
    assert share_slow == pytest.approx(100 / 500, abs=0.04)  # 2 s at 50/s of 500 steps in all


def test_with_nothing_known_a_window_is_one_piece() -> None:
    assert StepClock().segments(1.0, 2.0) == [(1.0, 2.0, 1.0)]


def test_phase_events_with_a_clock_keep_the_token_and_context_totals() -> None:
    clock = StepClock()
    for k in range(20):
        clock.observe(0.1 * k, 0.1 * k + 3.0, 150.0)
    events = phase_events(
        "r", 5.0, prompt_tokens=100, completion_tokens=51, prefill_s=0.5, decode_s=3.0, clock=clock
    )
    decode = [e for e in events if e.phase.label == "decode"]
    assert len(decode) > 1
    assert sum(e.units for e in decode) == pytest.approx(50.0)
    assert sum(e.context_tokens for e in decode) == pytest.approx(50 * 100 + 50 * 51 / 2)
    assert decode[0].t0_s == pytest.approx(2.0) and decode[-1].t1_s == pytest.approx(5.0)


def test_with_max_pieces_a_long_window_is_a_few_pieces_that_still_follow_the_rate() -> None:
    def rate(t):  # type: ignore[no-untyped-def]
        return np.where((t >= 4.0) & (t < 6.0), 50.0, 100.0)

    clock = StepClock(bin_s=0.1, iterations=200, max_pieces=4)
    rng = np.random.default_rng(0)
    _observe_true_rate(clock, rate, [(a, a + rng.uniform(0.5, 4.0)) for a in rng.uniform(0.0, 8.0, 300)])
    segments = clock.segments(2.0, 8.0)
    assert 3 <= len(segments) <= 4 and sum(s for _, _, s in segments) == pytest.approx(1.0)
    assert segments[0][0] == 2.0 and segments[-1][1] == 8.0
    density = [s / (b - a) for a, b, s in segments]
    middle = [d for (a, b, _), d in zip(segments, density, strict=True) if 4.0 <= (a + b) / 2 <= 6.0]
    assert middle and max(middle) < 0.8 * min(density[0], density[-1])  # fewer steps while slow


def test_the_fit_is_redone_only_as_windows_accumulate_not_per_window() -> None:
    clock = StepClock()
    fits = []
    fit = clock._fit
    clock._fit = lambda: (fits.append(1), fit())[1]  # type: ignore[method-assign]
    for k in range(2000):  # one span at a time, as the handler sees them
        clock.observe(0.01 * k, 0.01 * k + 1.0, 50.0)
        clock.segments(0.01 * k, 0.01 * k + 1.0)
    assert len(fits) < 40  # a fit each time a quarter more windows arrived: ~log(2000) / log(1.25)


def _fitted_clock(merge_tol: float) -> StepClock:
    def rate(t):  # type: ignore[no-untyped-def]
        return np.where((t >= 4.0) & (t < 6.0), 50.0, 100.0)

    clock = StepClock(bin_s=0.1, iterations=200, merge_tol=merge_tol)
    rng = np.random.default_rng(0)
    _observe_true_rate(clock, rate, [(a, a + rng.uniform(0.5, 4.0)) for a in rng.uniform(0.0, 8.0, 300)])
    clock.fit()
    return clock


def test_the_cumulative_steps_give_the_shares_segments_gives() -> None:
    clock = _fitted_clock(merge_tol=-1.0)  # nothing merged: a piece per bin
    steps = clock.steps_at_many
    for t0, t1 in ((2.0, 8.0), (4.5, 5.5), (0.7, 3.3)):
        total = float(np.diff(steps(np.array([t0, t1])))[0])
        for a, b, share in clock.segments(t0, t1):
            assert float(np.diff(steps(np.array([a, b])))[0]) / total == pytest.approx(share, abs=1e-9)
    assert np.all(np.diff(steps(np.linspace(-5.0, 20.0, 500))) > 0)  # outside the fit: the mean rate


def test_the_slow_part_of_a_window_gets_its_share_of_the_steps() -> None:
    steps = _fitted_clock(merge_tol=0.05).steps_at_many
    s = steps(np.array([2.0, 4.0, 6.0, 8.0]))
    assert (s[2] - s[1]) / (s[3] - s[0]) == pytest.approx(100 / 500, abs=0.04)  # 2 s at 50 of 6 s


def test_a_window_longer_than_the_horizon_is_not_observed() -> None:
    """A forged one-day decode: observed, every later fit would span 1.7 million bins of 50 ms."""
    clock = StepClock(bin_s=0.05, horizon_s=300.0)
    _observe_true_rate(clock, lambda t: np.full_like(t, 100.0), [(k * 0.5, k * 0.5 + 2.0) for k in range(40)])
    clock.observe(0.0, 86_400.0, 8_640_000.0)
    clock.observe_many(np.array([0.0]), np.array([86_400.0]), np.array([8_640_000.0]))
    assert len(clock._windows) == 40
    clock.fit()
    assert clock._rate.size < 1000  # the fit spans the kept windows only


def test_a_short_window_hours_back_arriving_after_recent_ones_does_not_stretch_the_fit() -> None:
    """An adversarial review's find: a span 3 h back (within the clock skew allowed, 0.5 s long)
    after recent ones was kept, trimmed only as a leading run: every later fit spanned 3 h of bins
    (215,969 against at most 12,000; 0.3-0.85 s a tick)."""
    import time

    from sidecar.taps.otlp import OtlpReceiver
    from sidecar.taps.vllm_spans import VllmSpanHandler
    from tests.sidecar.taps.test_otlp_hostile import export, span

    now = time.time()
    handler = VllmSpanHandler(lambda unix_s: unix_s, wall=lambda: now)
    rx = OtlpReceiver([handler], wall=lambda: now)
    good = [span(i, now - 2, gen_ai__latency__time_in_model_decode=0.4) for i in range(3)]
    old = span(99, now - 3 * 3600, gen_ai__latency__time_in_model_decode=0.4)
    assert rx.receive(export(*good, old).SerializeToString()) == {}
    rx.due(0.0)
    clock = handler.clock
    assert clock._rate.size <= 2 * clock.horizon_s / clock.bin_s
