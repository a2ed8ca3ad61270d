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


def test_a_reset_is_taken_after_a_few_reads_and_its_energy_since_the_restart_paid_once_it_moved() -> None:
    """The driver reloaded: 50 J since. Taken after REBASE_AFTER reads; the 190 J since the restart
    paid when the new counter has moved REBASE_AFTER times (a stale value would have come back)."""
    gains, counter = run([1e8, 1e8 + 70, 50.0, 120.0, 190.0, 260.0, 330.0, 400.0, 470.0])
    assert gains == [70.0, 0.0, 0.0, 0.0, 70.0, 70.0, 70.0 + 190.0, 70.0]  # nothing lost
    assert (counter.resets, counter.implausible_reads) == (1, REBASE_AFTER)


def test_a_counter_that_stays_where_it_jumped_is_taken_as_it_reads_after_a_few_reads() -> None:
    jumped = 5e9
    reads = [1e8, 1e8 + 70, *(jumped + 70 * k for k in range(REBASE_AFTER)), jumped + 70 * REBASE_AFTER]
    gains, counter = run(reads)
    assert gains == [70.0, *[0.0] * REBASE_AFTER, 70.0]  # the gain over the bad reads lost
    assert (counter.implausible_reads, counter.resets) == (REBASE_AFTER, 0)


def test_a_drop_to_zero_that_comes_back_is_no_reset() -> None:
    gains, counter = run([1e8, 1e8 + 70, 0.0, 1e8 + 140, 1e8 + 210])
    assert gains == [70.0, 0.0, 70.0, 70.0]
    assert (counter.resets, counter.implausible_reads) == (0, 1)


def test_a_garbage_value_read_again_and_again_costs_nothing_when_the_counter_comes_back() -> None:
    """Adversarial probe: NVML's all-ones read three times was taken as the counter, and the real
    counter's return was then a reset: its whole value (2 kJ here) counted as energy."""
    reads = [2000.0, 2070.0, *[NVML_ALL_ONES_J] * REBASE_AFTER, 2280.0, 2350.0]
    gains, counter = run(reads)
    assert gains == [70.0, *[0.0] * REBASE_AFTER, 210.0, 70.0]
    assert sum(gains) == 2350.0 - 2000.0 and counter.resets == 0


@pytest.mark.parametrize("real_j", [2000.0, 5e6])
def test_a_garbage_first_read_invents_no_energy(real_j: float) -> None:
    """Adversarial probe: the first read is only a base; garbage there made the real counter a
    reset (2 kJ invented) or kept every good read out."""
    reads = [NVML_ALL_ONES_J, *(real_j + 10 * k for k in range(REBASE_AFTER + 2))]
    gains, counter = run(reads)
    assert gains == [*[0.0] * REBASE_AFTER, 10.0, 10.0]
    assert counter.resets == 0


def test_a_wrap_range_of_zero_gives_no_negative_gain() -> None:
    gains, _ = run([100.0, 50.0, 120.0], DeviceInfo("package-0", "cpu", "cpu", wrap_j=0.0))
    assert gains == [0.0, 20.0]


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
