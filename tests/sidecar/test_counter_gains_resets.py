"""A counter taken by a reset (``sidecar/counter_gains.py``): unproven and in doubt until it moves,
what it owes tied to it, and the real counter kept aside against a stale value that moves once.

Each case was found by an adversarial review of the rewritten bad-read guard. The real counter is
NVML-like (it steps every 100 ms at 700 W), read every 20 ms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sidecar.counter_gains import CounterGains
from sidecar.meters.base import DeviceInfo, Reading
from sidecar.timeline import Timeline
from tests.sidecar.test_counter_gains_hostile import GPU, NVML_ALL_ONES_J, POLL_S, counter_with, feed, real_j


@pytest.mark.parametrize("bad_j", [0.0, NVML_ALL_ONES_J])
def test_a_reload_then_bad_reads_before_the_new_counter_moved_enough_still_pays_the_reset(
    bad_j: float,
) -> None:
    """A driver reload at 1 s (the new counter shows 300 J since the restart), then 3 reads of
    zero or all-ones while it comes up: the 300 J owed were overwritten or dropped (lost)."""

    def reads(bad: bool) -> list[float]:
        out = []
        for k in range(200):
            t = k * POLL_S
            raw = real_j(t, 1e8) if t < 1.0 else 300.0 + 700.0 * math.floor((t - 1.0) / 0.1 + 1e-9) * 0.1
            out.append(bad_j if bad and 60 <= k < 63 else raw)
        return out

    clean_j, clean = feed(reads(False))
    gained_j, _ = feed(reads(True))
    assert clean.resets == 1
    assert gained_j == pytest.approx(clean_j)


@pytest.mark.parametrize(
    "bad", [lambda j: 0.0, lambda j: 0.0 if j < 5 else NVML_ALL_ONES_J], ids=["zeros", "zeros-then-all-ones"]
)
def test_a_zero_reset_that_never_moved_does_not_push_the_real_counter_out(bad: object) -> None:
    """2 s of bad reads, first zeros (a reset) then all-ones (a rebase): the zero counter, taken as
    proven though it never moved, replaced the real counter kept aside, and the stretch was lost
    (1,470 J). Every read of it is counted, as for any garbage (3 of 100 were)."""
    assert callable(bad)
    reads, made_j = counter_with(1e8, 400, {})
    for j in range(100):
        reads[100 + j] = bad(j)
    gained_j, counter = feed(reads)
    assert gained_j == pytest.approx(made_j)
    assert counter.implausible_reads == 100


def test_the_energy_of_a_zero_stretch_taken_as_a_reset_is_spread_and_sealing_waits() -> None:
    """5 s of zeros on GPU-0: taken as a reset, the device was no longer in doubt, so sealing was not
    held and the 3.5 kJ made meanwhile landed in the one tick of the read that showed it."""
    timeline = Timeline([DeviceInfo("GPU-0", "H100"), DeviceInfo("GPU-1", "H100")])
    held = []
    for k in range(1000):
        t = k * POLL_S
        zero = 250 <= k < 500
        timeline.add(Reading(t, (0.0 if zero else real_j(t, 1e8), real_j(t, 5e7))))
        if zero:
            held.append(timeline.doubt_hold_s(t) is not None)
    assert all(held)
    for second in (3.0, 6.0, 9.0, 12.0):
        assert timeline.energy_between(second, second + 1.0) == pytest.approx(1400.0, rel=0.02)


def test_a_stale_value_that_moves_once_does_not_replace_the_real_counter() -> None:
    """A cache handing back two of the counter's values of 10 s before, out of order (A x5, B, A x5,
    B, ...): the real counter kept aside was replaced by B, and its return counted B's move and
    the cache's age again. Only B's moves (70 J each, plausible) may count: once."""
    reads = [real_j(12.0 + k * POLL_S, 1e8) for k in range(300)]
    made_j = reads[-1] - reads[0]
    stale = {"A": real_j(1.9, 1e8), "B": real_j(2.0, 1e8)}
    pattern = (["A"] * 5 + ["B"]) * 4
    for k, name in enumerate(pattern):
        reads[20 + k] = stale[name]
    gained_j, _ = feed(reads)
    assert made_j <= gained_j <= made_j + 70.0 * pattern.count("B") + 1e-6


def test_a_genuine_reset_is_paid_once_and_the_old_counter_dropped() -> None:
    """The plain reload: the new counter's 300 J since the restart paid once it has moved 3 times,
    after which the old counter is no longer kept aside (the guard goes back to its short path)."""
    reads = [
        real_j(k * POLL_S, 1e8) if k < 50 else 300.0 + real_j((k - 50) * POLL_S, 0.0) for k in range(200)
    ]
    gained_j, counter = feed(reads)
    assert counter.resets == 1
    assert gained_j == pytest.approx(real_j(49 * POLL_S, 0.0) + 300.0 + real_j(149 * POLL_S, 0.0))
    assert counter._calm  # nothing kept aside, nothing owed


def test_a_garbage_first_read_kept_aside_is_no_return_an_hour_later() -> None:
    """A first read of 0, then the real counter (36 MJ, rebased): the 0 was kept aside for ever, its
    return judged over 10 kW x its age, and one stale read an hour later was its 'return' (36 MJ
    invented). It is dropped once the counter has moved and it is ASIDE_KEEP_S old; the guard is
    back on its short path."""
    counter, total_j, period_s = CounterGains([GPU]), 0.0, 0.1
    for k in range(int(3700 / period_s)):
        t = k * period_s
        raw = 0.0 if k == 0 else real_j(t, 3.6e7)
        if k == int(3600 / period_s):
            raw = real_j(t - 2.0, 3.6e7)  # a stale read
        gained = counter.gains(t, np.array([raw]))
        total_j += 0.0 if gained is None else float(gained[0])
    assert total_j <= real_j(3700.0, 0.0)
    assert counter._calm


@pytest.mark.parametrize("second", ["nan", "zeros"])
def test_two_reloads_in_a_row_pay_both_resets(second: str) -> None:
    """A reload (5 s of NaN, then a new counter), then a second one before the first new counter
    moved 3 times: the first reset's energy owed was dropped with the counter kept aside (3.5 kJ)."""

    def q(t: float) -> float:
        return real_j(t, 0.0)

    counter, gained_j, first_j = CounterGains([GPU]), 0.0, 0.0
    for k in range(int(115 / POLL_S)):
        t = k * POLL_S
        if t < 100:
            raw = 1e8 + q(t)
        elif t < 105:
            raw = math.nan
        elif t < 105.15:
            raw = first_j = q(t) - q(100.0)
        elif t < 106:
            raw = 0.0 if second == "zeros" else math.nan
        else:
            raw = q(t) - q(105.5)
        gained = counter.gains(t, np.array([raw]))
        gained_j += 0.0 if gained is None else float(gained[0])
    shown_j = q(99.98) + first_j + raw  # the old counter's energy, the first new one's, the second's
    assert counter.resets == 2
    assert gained_j == pytest.approx(shown_j)


def hottest_w(timeline: Timeline, after_s: float) -> float:
    """The highest power of any tick of a one-device timeline after ``after_s``."""
    t, e, _ = timeline.edges_after(after_s)
    return float((np.diff(e) / np.diff(t)).max())


def test_a_reloads_energy_owed_is_spread_over_the_reload_and_sealing_waits() -> None:
    """A reload: 3 s of NaN, the new counter shows 1,750 J since its restart. The doubt ended at its
    first move and the 1,750 J were paid at its third, whole in one 100 ms tick (18 kW on 700 W)."""
    timeline, unheld = Timeline([GPU]), []
    for k in range(int(110 / POLL_S)):
        t = k * POLL_S
        raw = real_j(t, 1e8) if t < 100 else math.nan if t < 103 else real_j(t, 0.0) - real_j(100.5, 0.0)
        timeline.add(Reading(t, (raw,)))
        if 103.0 <= t < 103.29:  # until the reset is paid, at the new counter's third move (103.3)
            unheld.append(timeline.doubt_hold_s(t) is None)
    assert timeline.resets == 1
    assert not any(unheld)
    assert hottest_w(timeline, 99.0) < 3 * 700.0


def test_a_rapl_wrap_after_a_gap_in_reads_is_spread_over_the_gap() -> None:
    """A RAPL zone at 100 W whose reads stop for 2 s across a wrap: the wrap's gain, taken a read
    late, landed in one 20 ms tick (20 kW)."""
    wrap_j = 262143.328850
    timeline = Timeline([DeviceInfo("package-0", "package-0", type="cpu", wrap_j=wrap_j)])
    for k in range(int(110 / POLL_S)):
        t = k * POLL_S
        if not 100.0 <= t < 102.0:  # no read meanwhile: the poll thread stalled
            timeline.add(Reading(t, ((wrap_j - 100.0 * 101.0 + 100.0 * t) % wrap_j,)))
    assert timeline.wraps == 1
    assert hottest_w(timeline, 95.0) < 300.0
