"""The idle floor is measured from idle ticks: robust, decaying, stale when old, restorable, overridable."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sidecar.attribution.fit import WORK, EnergyModelFit
from sidecar.attribution.floor import FloorEstimate, FloorState
from sidecar.attribution.rules import FittedRule, make_rule


def _idle(floor: FloorEstimate, power_w: float, t0_s: float, n: int) -> float:
    t = t0_s
    for _ in range(n):
        t += 0.1
        floor.observe_idle(t, 0.1, power_w * 0.1)
    return t


def test_never_observed_floor_is_unknown_and_stale() -> None:
    reading = FloorEstimate("GPU-0").reading(100.0)
    assert reading.power_w is None
    assert reading.source == "none"
    assert reading.stale
    assert reading.age_s is None


def test_floor_is_the_median_of_idle_ticks_so_a_tail_of_hot_ticks_does_not_move_it() -> None:
    floor = FloorEstimate("GPU-0")
    t = _idle(floor, 75.0, 0.0, 100)
    _idle(floor, 140.0, t, 20)  # ticks right after a burst, clocks still high
    assert floor.power_w(t + 2.0) == pytest.approx(75.0)
    assert floor.reading(t + 2.0).source == "measured"


def test_floor_follows_a_slow_change_as_old_samples_decay() -> None:
    floor = FloorEstimate("GPU-0", halflife_s=600.0)
    t = _idle(floor, 75.0, 0.0, 100)
    t = _idle(floor, 90.0, t + 3600.0, 30)  # an hour later, fewer but fresher samples
    assert floor.power_w(t) == pytest.approx(90.0)


def test_floor_is_stale_once_no_idle_tick_was_seen_for_longer_than_the_limit() -> None:
    floor = FloorEstimate("GPU-0", stale_after_s=600.0)
    t = _idle(floor, 75.0, 0.0, 10)
    assert not floor.reading(t + 599.0).stale
    stale = floor.reading(t + 601.0)
    assert stale.stale and stale.power_w == pytest.approx(75.0)


def test_override_wins_and_is_never_stale() -> None:
    floor = FloorEstimate("GPU-0", override_w=123.0)
    _idle(floor, 75.0, 0.0, 10)
    reading = floor.reading(1e6)
    assert (reading.power_w, reading.source, reading.stale) == (123.0, "override", False)
    assert floor.state(1e6, 2e9) is not None and floor.state(1e6, 2e9).power_w == pytest.approx(75.0)  # type: ignore[union-attr]


def test_restored_floor_applies_only_to_the_same_devices_and_keeps_its_age() -> None:
    saved = FloorState("GPU-0,GPU-1", 150.0, observed_unix_s=1_000.0, samples=500)
    other = FloorEstimate("GPU-0")
    assert not other.restore(saved, now_s=10.0, now_unix_s=1_100.0)
    floor = FloorEstimate("GPU-0,GPU-1")
    assert floor.restore(saved, now_s=10.0, now_unix_s=1_100.0)
    reading = floor.reading(10.0)
    assert reading.source == "restored"
    assert reading.power_w == pytest.approx(150.0)
    assert reading.age_s == pytest.approx(100.0)


def test_bad_idle_samples_are_ignored() -> None:
    floor = FloorEstimate("GPU-0")
    floor.observe_idle(1.0, 0.1, math.nan)
    floor.observe_idle(1.0, 0.1, -5.0)
    floor.observe_idle(1.0, 0.001, 1.0)  # shorter than the counter's resolution allows
    assert floor.reading(1.0).source == "none"


def _saturated_fit(floor: FloorEstimate, seed: int = 0) -> EnergyModelFit:
    """Busy ticks only: tick length fixed, steps per tick an affine function of tokens per tick."""
    rng = np.random.default_rng(seed)
    fit = EnergyModelFit(min_busy_ticks=20, rows_of_ticks=1, floor=floor)
    true = np.array([2.0, 0.028, 0.036, 0.0, 0.0, 0.0])
    for k in range(300):
        decode = rng.uniform(100, 400)
        prefill = rng.uniform(0, 2000)
        steps = 8.0 - prefill / 600.0  # longer prefill steps, fewer of them: collinear
        work = np.array([steps, prefill, decode, 0.0, 0.0, 0.0])
        fit.add(work, 0.1, 75.0 * 0.1 + float(work @ true) * rng.lognormal(0, 0.02), t_s=10.0 + 0.1 * k)
    return fit


def test_with_the_floor_measured_a_saturated_window_still_recovers_the_work_costs() -> None:
    floor = FloorEstimate("GPU-0")
    _idle(floor, 75.0, 0.0, 50)
    fit = _saturated_fit(floor)
    assert fit.coef is not None and fit.ok
    assert fit.coef.floor_w == pytest.approx(75.0)
    assert fit.coef.j_per_prefill_token == pytest.approx(0.028, rel=0.1)
    assert fit.coef.j_per_decode_token == pytest.approx(0.036, rel=0.1)
    assert FittedRule(fit).quality() == "ok"


def test_without_any_floor_the_fit_says_so_instead_of_claiming_ok() -> None:
    fit = _saturated_fit(FloorEstimate("GPU-0"))
    assert fit.coef is not None
    assert not fit.ok
    assert FittedRule(fit).quality() == "floor-unmeasured"


def test_an_ill_conditioned_window_holds_the_last_good_coefficients_and_flags_them() -> None:
    floor = FloorEstimate("GPU-0", override_w=75.0)
    fit = EnergyModelFit(min_busy_ticks=10, rows_of_ticks=1, window=50, floor=floor, max_condition=100.0)
    rng = np.random.default_rng(1)
    for k in range(60):  # varied work: well conditioned
        work = np.array([rng.uniform(2, 8), rng.uniform(0, 2000), rng.uniform(50, 400), 0, 0, 0])
        fit.add(work, 0.1, 7.5 + work[0] * 2 + work[1] * 0.028 + work[2] * 0.036, t_s=0.1 * k)
    assert fit.ok and fit.coef is not None
    for k in range(60):  # prefill always 5x decode: the two columns collinear
        decode = rng.uniform(50, 400)
        work = np.array([5.0, 5 * decode, decode, 0, 0, 0])
        fit.add(work, 0.1, 7.5 + 10 + decode * (5 * 0.028 + 0.036), t_s=6.0 + 0.1 * k)
    assert fit.condition > 100.0
    assert fit.held and fit.coef is not None
    held = (fit.coef.j_per_step, fit.coef.j_per_prefill_token, fit.coef.j_per_decode_token)
    assert held == pytest.approx((2.0, 0.028, 0.036), rel=0.01)  # the last good fit, not a wild one
    assert FittedRule(fit).quality() == "held"


def test_interval_grows_with_the_work_it_prices() -> None:
    floor = FloorEstimate("GPU-0")
    _idle(floor, 75.0, 0.0, 50)
    rule = FittedRule(_saturated_fit(floor))
    small = rule.interval_j(10.0, np.array([1.0, 100.0, 10.0, 0, 0, 0]), 0.0)
    large = rule.interval_j(100.0, np.array([10.0, 1000.0, 100.0, 0, 0, 0]), 0.0)
    assert small is not None and large is not None
    assert small[0] < 10.0 < small[1]
    assert (large[1] - large[0]) > (small[1] - small[0])
    assert len(WORK) == 6


def test_intervals_of_many_requests_are_each_ones_interval_exactly() -> None:
    floor = FloorEstimate("GPU-0")
    _idle(floor, 75.0, 0.0, 50)
    rule = FittedRule(_saturated_fit(floor))
    rng = np.random.default_rng(4)
    work = rng.uniform(0, 500, (300, len(WORK))) * rng.integers(0, 2, (300, len(WORK)))
    energy, unexplained = rng.uniform(0, 50, 300), rng.uniform(0, 1, 300)
    many = rule.intervals_j(energy, work, unexplained)
    assert many is not None
    one = [rule.interval_j(float(energy[k]), work[k], float(unexplained[k])) for k in range(300)]
    assert list(zip(many[0].tolist(), many[1].tolist(), strict=True)) == one  # bit for bit
    assert make_rule("tokens").intervals_j(energy, work, unexplained) is None


def test_a_refit_that_fails_numerically_keeps_the_last_coefficients_and_says_not_ok(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refit runs inside the tick: a solver failure (one raised ValueError on a target at float
    noise) must cost the fit's freshness, never the tick."""
    floor = FloorEstimate("GPU-0")
    _idle(floor, 75.0, 0.0, 50)
    fit = _saturated_fit(floor)
    before = fit.coef

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("zero-size array to reduction operation minimum")

    monkeypatch.setattr("sidecar.attribution.fit.nnls", broken)
    fit.add(np.array([8.0, 0.0, 200.0, 0.0, 0.0, 0.0]), 0.1, 20.0, t_s=100.0)
    assert fit.coef is before and fit.refit_failed and not fit.ok
    monkeypatch.undo()
    fit.add(np.array([8.0, 0.0, 200.0, 0.0, 0.0, 0.0]), 0.1, 20.0, t_s=100.1)
    assert not fit.refit_failed and fit.ok
