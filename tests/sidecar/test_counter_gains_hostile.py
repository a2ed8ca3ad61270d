"""Counter gains under garbage reads: what no device made is never energy (``sidecar/counter_gains.py``).

Each case was found by an adversarial review of the bad-read guard; the real counter is NVML-like
(it steps every 100 ms at 700 W) and is read every 20 ms unless said otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.counter_gains import REBASE_AFTER, CounterGains
from sidecar.meters.base import DeviceInfo, Reading
from sidecar.timeline import Timeline

GPU = DeviceInfo("GPU-0", "H100")
NVML_ALL_ONES_J = (2**64 - 1) / 1000.0
POLL_S = 0.02
RAPL_RANGE_J = 262143.328850  # an intel-rapl package's max_energy_range_uj / 1e6


def real_j(t: float, start_j: float, watts: float = 700.0) -> float:
    """An NVML-like counter: it steps every 100 ms."""
    return start_j + watts * round(math.floor(t / 0.1 + 1e-9) * 0.1, 9)


def feed(reads: list[float], device: DeviceInfo = GPU) -> tuple[float, CounterGains]:
    """The energy a device gained over ``reads`` (one every POLL_S)."""
    counter = CounterGains([device])
    total = 0.0
    for k, raw in enumerate(reads):
        gained = counter.gains(k * POLL_S, np.array([raw]))
        total += 0.0 if gained is None else float(gained[0])
    return total, counter


def counter_with(start_j: float, polls: int, bad: dict[range, float | None]) -> tuple[list[float], float]:
    """The reads of a real counter with the polls in each range replaced by a value (None: the
    counter as it read at the range's start, a stale value), and the energy it really made."""
    times = [k * POLL_S for k in range(polls)]
    reads = [real_j(t, start_j) for t in times]
    for where, value in bad.items():
        for k in where:
            reads[k] = real_j(times[where.start], start_j) if value is None else value
    return reads, real_j(times[-1], start_j) - real_j(0.0, start_j)


@pytest.mark.parametrize(("start_j", "zero_s"), [(3000.0, 0.06), (2e4, 2.0), (5e5, 60.0), (1e8, 0.06)])
def test_zeros_taken_as_a_reset_then_the_old_counter_back_invent_nothing(
    start_j: float, zero_s: float
) -> None:
    """Zeros for REBASE_AFTER reads are a reset; the old counter's return was its whole value
    again (507 kJ invented on a 500 kJ counter after 60 s of zeros)."""
    zeros = range(500, 500 + round(zero_s / POLL_S))
    reads, made_j = counter_with(start_j, zeros.stop + 500, {zeros: 0.0})
    gained_j, counter = feed(reads)
    assert gained_j == pytest.approx(made_j)
    assert counter.resets == 1  # counted: it looked like one


@pytest.mark.parametrize("start_j", [1e8, 3000.0])
def test_a_stale_value_read_again_and_again_counts_nothing_twice(start_j: float) -> None:
    """The counter as it was 1 s before, read REBASE_AFTER times: rebased (or a young counter's
    reset), then the real counter back counted the gap again (630 J; 7,130 J when young)."""
    stale = range(300, 300 + REBASE_AFTER)
    reads, made_j = counter_with(start_j, 600, {range(250, 251): None})  # the value at poll 250...
    for k in stale:
        reads[k] = reads[250]  # ...read at polls 300-302
    gained_j, counter = feed(reads)
    assert gained_j == pytest.approx(made_j)
    assert counter.implausible_reads == REBASE_AFTER


@pytest.mark.parametrize("zeros", [1, 2, 3])
def test_zeros_near_a_rapl_wrap_are_no_wrap(zeros: int) -> None:
    """A transient zero within 10 kJ of the wrap boundary was taken at once as a wrap (+5.7 kJ):
    judged over 1 s at 10 kW instead of the time since the last read."""
    rapl = DeviceInfo("intel-rapl:0", "package-0", "cpu", wrap_j=RAPL_RANGE_J)
    start_j = RAPL_RANGE_J - 6000.0
    made = [start_j + 150.0 * k * POLL_S for k in range(500)]
    reads = [j % RAPL_RANGE_J for j in made]
    reads[100 : 100 + zeros] = [0.0] * zeros
    gained_j, counter = feed(reads, rapl)
    assert gained_j <= made[-1] - made[0] + 1e-6
    assert counter.wraps == 0


def test_a_real_rapl_wrap_is_taken_one_read_late_and_not_counted_as_a_bad_read() -> None:
    rapl = DeviceInfo("intel-rapl:0", "package-0", "cpu", wrap_j=100.0)
    gained_j, counter = feed([96.0, 98.0, 1.0, 4.0, 6.0], rapl)
    assert gained_j == pytest.approx(100.0 - 96.0 + 6.0)
    assert (counter.wraps, counter.implausible_reads) == (1, 0)


@pytest.mark.parametrize(
    "garbage",
    [
        [NVML_ALL_ONES_J, NVML_ALL_ONES_J, 0.0],  # two say forward, one back: no agreement
        [*[math.nan] * 500, 0.0],  # a NaN burst, then one zero
        [-5.0, -5.0, -5.0],  # no counter reads a negative number
    ],
)
def test_suspect_reads_that_disagree_never_make_a_reset(garbage: list[float]) -> None:
    """Only the last read of a run was judged: garbage that went forward then one zero was a reset,
    and the energy over a NaN burst of any length was lost."""
    reads, made_j = counter_with(1e8, 1200, {})
    reads[100 : 100 + len(garbage)] = garbage
    gained_j, counter = feed(reads)
    assert gained_j == pytest.approx(made_j)
    assert counter.resets == 0


def test_garbage_from_the_start_costs_nothing_when_the_counter_comes_back() -> None:
    """The first read is an unproven base; garbage before the counter first moved was rebased with
    nothing kept aside, and the whole stretch's energy lost (20 kJ)."""
    reads, made_j = counter_with(1e8, 1500, {range(2, 500): NVML_ALL_ONES_J})
    gained_j, counter = feed(reads)
    assert gained_j == pytest.approx(made_j)
    assert counter.implausible_reads == 498  # every garbage read counted, not the first 3


def test_a_reset_behind_garbage_is_a_reset() -> None:
    """The driver reloaded at 12 s while the reads were garbage (10-20 s): the counter kept aside
    was the one that went back."""
    times = [k * POLL_S for k in range(1500)]
    reads = [real_j(t, 1e8) if t < 12.0 else real_j(t - 12.0, 0.0) for t in times]
    reads[500:1000] = [NVML_ALL_ONES_J] * 500
    gained_j, counter = feed(reads)
    since_restart_j = reads[-1]
    assert counter.resets == 1
    assert gained_j == pytest.approx(real_j(times[499], 1e8) - 1e8 + since_restart_j)


def trial(draw_bad: list[tuple[int, int, str]]) -> tuple[float, float]:
    kinds = {
        "nan": math.nan,
        "inf": math.inf,
        "ones": NVML_ALL_ONES_J,
        "zero": 0.0,
        "neg": -3e5,
        "stale": None,
    }
    bad = {range(at, min(at + length, 580)): kinds[kind] for at, length, kind in draw_bad}
    reads, made_j = counter_with(5e5, 600, bad)
    gained_j, _ = feed(reads)
    return gained_j, made_j


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 570),
            st.sampled_from([1, 2, 3, 4, 10, 60, 200]),
            st.sampled_from(["nan", "inf", "ones", "zero", "neg", "stale"]),
        ),
        max_size=6,
    )
)
def test_no_garbage_read_invents_energy(draw_bad: list[tuple[int, int, str]]) -> None:
    """Stretches of NaN, infinity, all-ones, zeros, negative and stale reads over a 500 kJ counter:
    never more energy than the counter made (before this guard: up to tens of kJ more)."""
    gained_j, made_j = trial(draw_bad)
    assert gained_j <= made_j + 1e-6


@pytest.mark.parametrize("devices", [1, 2])
def test_the_timeline_spreads_energy_that_comes_back_over_the_time_it_was_made(devices: int) -> None:
    """10 s of all-ones reads on GPU-0: its energy meanwhile showed in the last tick before the
    counter came back (7.7 kJ in one second, none in the ten before)."""
    timeline = Timeline([DeviceInfo(f"GPU-{k}", "H100") for k in range(devices)])
    for k in range(1500):
        t = k * POLL_S
        raw = NVML_ALL_ONES_J if 500 <= k < 1000 else real_j(t, 1e8)
        timeline.add(Reading(t, (raw, *[real_j(t, 2e8)] * (devices - 1))))
    for second in (5.0, 12.0, 15.0, 19.5, 25.0):
        assert timeline.energy_between(second, second + 1.0) == pytest.approx(700.0 * devices, rel=0.02)
    assert timeline.energy_j.sum() == pytest.approx(devices * (real_j(1499 * POLL_S, 0.0)))


def test_a_spike_long_after_a_reset_is_not_the_old_counter_come_back() -> None:
    """The counter a genuine reset left was kept aside for ever, judged over the time since it last
    moved: an hour after a reload one read with bit 37 flipped was its 'return' (17 MJ invented)."""
    counter = CounterGains([GPU])
    total_j, period_s = 0.0, 0.1
    for k in range(int(3700 / period_s)):
        t = k * period_s
        milli_j = round(1000 * (1.2e8 + 700.0 * t if t < 60.0 else 700.0 * (t - 60.0)))
        if k == int(3660 / period_s):
            milli_j ^= 1 << 37
        gained = counter.gains(t, np.array([milli_j / 1000.0]))
        total_j += 0.0 if gained is None else float(gained[0])
    assert counter.resets == 1
    assert total_j <= 700.0 * 3700 + 1e-6


def test_a_device_in_doubt_for_long_holds_no_other_devices_doubt_back() -> None:
    """A GPU lost for good (NaN reads) made every later doubt of another GPU hold no sealing."""
    timeline = Timeline([DeviceInfo("GPU-0", "H100"), DeviceInfo("GPU-1", "H100")])
    held = []
    for k in range(int(120 / POLL_S)):
        t = k * POLL_S
        burst = 100.0 <= t < 102.0
        lost = math.nan if t >= 10.0 else real_j(t, 1e8)
        timeline.add(Reading(t, (lost, math.nan if burst else real_j(t, 5e7))))
        if burst:
            held.append(timeline.doubt_hold_s(t) is not None)
    assert all(held)
