"""The exact energy trace and the NVML-like counter: updates, 1 mJ floor, resets, wraps."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from sidecar.sim.counter import CounterConfig, EnergyTrace, SimCounter
from sidecar.sim.run import SimConfig, SimRun, simulate
from sidecar.sim.workload import WorkloadConfig

# steps [1, 2] s at 500 J and [3, 3.5] s at 100 J; idle 50 W; 5 s long
TRACE = EnergyTrace([1.0, 3.0], [2.0, 3.5], [500.0, 100.0], idle_w=50.0, duration_s=5.0)


def _counter(**kw: object) -> SimCounter:
    return SimCounter(TRACE, CounterConfig(**kw), np.random.default_rng(0))  # type: ignore[arg-type]


def test_trace_is_piecewise_linear_with_idle_between_steps() -> None:
    t = [-1.0, 0.0, 1.0, 1.5, 2.0, 3.0, 3.25, 5.0, 7.0]
    expected = [0.0, 0.0, 50.0, 300.0, 550.0, 600.0, 650.0, 775.0, 875.0]
    assert TRACE.energy_at(t) == pytest.approx(expected)
    assert TRACE.total_j == pytest.approx(775.0)
    assert TRACE.idle_j == pytest.approx(175.0)
    assert TRACE.power_at(1.5) == pytest.approx(500.0)
    assert TRACE.power_at(2.5) == pytest.approx(50.0)
    assert TRACE.utilization(2.0, window_s=2.0) == pytest.approx(0.5)


def test_updates_come_about_every_period() -> None:
    c = _counter(period_s=0.1, jitter_s=0.002)
    gaps = np.diff(c.update_times_s)
    assert np.all(gaps > 0.1 - 0.0041) and np.all(gaps < 0.1 + 0.0041)
    assert 0.0 <= c.update_times_s[0] < 0.1 + 0.002


def test_value_is_the_true_energy_at_the_last_update_floored_to_a_millijoule() -> None:
    c = _counter()
    u = c.update_times_s[:60]
    true = TRACE.energy_at(u)
    assert np.all(c.update_values_j[:60] <= true + 1e-12)
    assert np.all(true - c.update_values_j[:60] < 1e-3 + 1e-9)
    assert np.allclose(np.round(c.update_values_j * 1000), c.update_values_j * 1000, atol=1e-6)
    # between updates the value holds
    mid = (u[10] + u[11]) / 2
    assert c.value_at(mid) == c.value_at(u[10]) == c.update_values_j[10]
    assert c.value_at(u[10] - 1e-6) == c.update_values_j[9]


def test_counter_never_decreases_without_resets_even_past_the_horizon() -> None:
    c = _counter(horizon_s=1.0)
    t = np.arange(-0.5, 20.0, 0.02)
    v = c.values_at(t)
    assert np.all(np.diff(v) >= 0)
    assert v[-1] == pytest.approx(TRACE.energy_at(20.0), abs=50.0 * 0.1 + 1e-3)


def test_base_offset_is_added() -> None:
    c = _counter(base_j=12345.678)
    assert c.value_at(-1.0) == pytest.approx(12345.678)
    last_update_s = c.update_times_s[np.searchsorted(c.update_times_s, 10.0, side="right") - 1]
    expected = math.floor((12345.678 + float(TRACE.energy_at(last_update_s))) * 1000) / 1000
    assert c.value_at(10.0) == pytest.approx(expected, abs=1e-9)


def test_reset_restarts_from_zero() -> None:
    c = _counter(base_j=1000.0, resets_s=(2.5,), phase_s=0.0, jitter_s=0.0)
    before, after = c.value_at(2.45), c.value_at(2.55)
    assert before > 1000.0
    assert after < 10.0  # energy since 2.5 s only, base lost
    assert c.value_at(3.0) == pytest.approx(TRACE.energy_at(3.0) - TRACE.energy_at(2.5), abs=1e-3)


def test_wrap_takes_the_value_modulo_the_range() -> None:
    c = _counter(wrap_j=100.0)
    t = np.arange(0.0, 5.0, 0.05)
    v = c.values_at(t)
    assert np.all((v >= 0) & (v < 100.0))
    assert np.sum(np.diff(v) < 0) == 7  # 775 J wraps 7 times


def test_counter_over_a_run_reads_the_run_total(small_run: SimRun) -> None:
    end = small_run.duration_s
    assert small_run.counter.value_at(end + 0.2) == pytest.approx(
        small_run.trace.energy_at(end + 0.2), abs=0.2 * small_run.config.gpu.idle_w + 1e-3
    )


def test_reading_every_20_ms_for_minutes_is_cheap() -> None:
    run = simulate(SimConfig(workload=WorkloadConfig(n_requests=5, arrivals="all-at-once")), seed=0)
    t = np.arange(0.0, 600.0, 0.02)
    start = time.perf_counter()
    for x in t[:5000]:
        run.counter.value_at(float(x))
    assert time.perf_counter() - start < 1.0
    assert np.all(np.diff(run.counter.values_at(t)) >= 0)
