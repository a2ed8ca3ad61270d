"""Counter gains: resets, wraps and reads no device could make (``sidecar/counter_gains.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar.counter_gains import PLAUSIBLE_WINDOW_S, REBASE_AFTER, CounterGains
from sidecar.meters.base import MAX_DEVICE_W, DeviceInfo

GPU = DeviceInfo("GPU-0", "H100")
NVML_ALL_ONES_J = (2**64 - 1) / 1000.0  # an unsigned long long of mJ read as all ones


def run(
    reads: list[float], device: DeviceInfo = GPU, period_s: float = 0.1
) -> tuple[list[float], CounterGains]:
    """The gains of one device read every ``period_s``, the first read the base."""
    counter = CounterGains([device])
    gains = [counter.gains(k * period_s, np.array([j])) for k, j in enumerate(reads)]
    assert gains[0] is None
    return [float(g[0]) for g in gains[1:] if g is not None], counter


def test_a_spike_no_device_makes_is_counted_not_added_and_costs_nothing_when_it_comes_back() -> None:
    gains, counter = run([1e8, 1e8 + 70, NVML_ALL_ONES_J, 1e8 + 140, 1e8 + 210])
    assert gains == [70.0, 0.0, 70.0, 70.0]  # the spike's 100 ms paid by the next read
    assert (counter.implausible_reads, counter.resets) == (1, 0)


def test_a_read_that_goes_back_to_garbage_and_returns_is_no_reset() -> None:
    gains, counter = run([1e8, 1e8 + 70, 3e6, 1e8 + 140])  # 3 MJ "since a reset": no reset
    assert gains == [70.0, 0.0, 70.0]
    assert (counter.implausible_reads, counter.resets) == (1, 0)


def test_not_a_number_is_a_bad_read_and_the_counter_keeps_its_last_value() -> None:
    gains, counter = run([1e8, float("nan"), float("inf"), 1e8 + 210])
    assert gains == [0.0, 0.0, 210.0]
    assert counter.implausible_reads == 2


def test_a_reset_to_a_small_value_is_a_reset_and_its_gain_is_energy() -> None:
    gains, counter = run([1e8, 1e8 + 70, 50.0, 120.0])  # the driver reloaded: 50 J since
    assert gains == [70.0, 50.0, 70.0]
    assert (counter.resets, counter.implausible_reads) == (1, 0)


def test_a_counter_that_stays_where_it_jumped_is_taken_as_it_reads_after_a_few_reads() -> None:
    jumped = 5e9
    reads = [1e8, 1e8 + 70, *(jumped + 70 * k for k in range(REBASE_AFTER)), jumped + 70 * REBASE_AFTER]
    gains, counter = run(reads)
    assert gains == [70.0, *[0.0] * REBASE_AFTER, 70.0]  # the gain over the bad reads lost
    assert counter.implausible_reads == REBASE_AFTER


def test_a_counter_that_comes_back_from_zero_is_taken_as_it_reads_after_a_few_reads() -> None:
    back = [1e8 + 70 * k for k in range(2, 3 + REBASE_AFTER)]
    gains, counter = run([1e8, 1e8 + 70, 0.0, *back])
    assert gains == [70.0, 0.0, *[0.0] * REBASE_AFTER, 70.0]
    assert (counter.resets, counter.implausible_reads) == (1, REBASE_AFTER)


def test_a_stalled_counter_catching_up_is_energy_judged_over_the_time_since_it_last_moved() -> None:
    stall_s = 30.0  # 30 s at 1 kW, more than MAX_DEVICE_W's second, less than its 30 s
    counter = CounterGains([GPU])
    counter.gains(0.0, np.array([1e8]))
    gained = counter.gains(stall_s, np.array([1e8 + 30_000.0]))
    assert gained is not None and gained[0] == 30_000.0 > MAX_DEVICE_W * PLAUSIBLE_WINDOW_S
    assert counter.implausible_reads == 0


@pytest.mark.parametrize("max_w", [MAX_DEVICE_W, 60 * MAX_DEVICE_W])
def test_a_device_s_own_bound_decides(max_w: float) -> None:
    gains, counter = run([0.0, 0.5 * 60 * MAX_DEVICE_W], DeviceInfo("GPU-0", "H100", max_w=max_w), 1.0)
    assert counter.implausible_reads == (max_w == MAX_DEVICE_W)
    assert gains == [0.0 if max_w == MAX_DEVICE_W else 0.5 * 60 * MAX_DEVICE_W]


def test_one_device_s_bad_read_leaves_the_others_gain() -> None:
    counter = CounterGains([GPU, DeviceInfo("GPU-1", "H100")])
    counter.gains(0.0, np.array([1e8, 2e8]))
    gained = counter.gains(0.1, np.array([NVML_ALL_ONES_J, 2e8 + 70]))
    assert gained is not None and list(gained) == [0.0, 70.0]
