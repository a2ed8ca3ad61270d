"""The timeline across counter resets and wraps: energy since a restart or past a wrap is counted once,
counted as a reset or a wrap, and never makes the total go back.

Hand-made :class:`Reading` objects, as in :mod:`tests.sidecar.test_timeline` (whose helpers these use).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.counter_gains import REBASE_AFTER
from sidecar.meters.base import Reading
from sidecar.timeline import DOUBT_HOLD_S, Timeline
from tests.sidecar.test_timeline import GPU, edges, gpus


def test_a_counter_reset_counts_a_reset_and_adds_the_new_raw_value() -> None:
    """NVML restarts from 0 on a driver reload: the joules since the restart are the new raw value,
    taken once the counter has read back for REBASE_AFTER reads (a drop that comes back is none)
    and paid once the new counter has moved REBASE_AFTER times (a stale value read a few times is
    no reset: the old counter comes back)."""
    timeline = Timeline([GPU], max_tick_s=100.0)
    reads = [(0.0, 5000.0), (1.0, 5010.0), (2.0, 3.0), (3.0, 7.0), (4.0, 9.0), (5.0, 12.0), (6.0, 13.0)]
    for t, e in [*reads, (7.0, 15.0)]:
        timeline.add(Reading(t, (e,)))
    assert (timeline.resets, timeline.wraps, timeline.implausible_reads) == (1, 0, REBASE_AFTER)
    assert timeline.energy_j.tolist() == [10.0 + 9.0 + 6.0]
    # the 9 J since the restart are paid with the third move's 2 J (edge dated 6.5) and spread since the
    # old counter last moved (t=1), not all in the last tick: 11 x 3.5 / 5.5 = 7 J by the edge at 4.5,
    # 11 x 4.5 / 5.5 = 9 by 5.5 (before: [10, 13, 14, 25])
    assert [e for _, e in edges(timeline)] == pytest.approx([10.0, 13.0 + 7.0, 14.0 + 9.0, 25.0])


def test_a_reset_to_zero_makes_no_edge_and_loses_no_energy() -> None:
    timeline = Timeline([GPU], max_tick_s=100.0)
    for t, e in [(0.0, 5000.0), (1.0, 5010.0), (2.0, 0.0), (3.0, 0.0), (4.0, 0.0), (5.0, 2.0)]:
        timeline.add(Reading(t, (e,)))
    assert timeline.resets == 1
    assert [e for _, e in edges(timeline)] == [10.0, 12.0]


def test_a_wrap_adds_raw_plus_the_range_minus_the_previous_value_and_counts_a_wrap() -> None:
    """RAPL's counter wraps at DeviceInfo.wrap_j: 95 J -> 5 J on a 100 J range is a gain of 10 J."""
    timeline = Timeline(gpus(1, wrap_j=100.0))
    for t, e in [(0.0, 80.0), (1.0, 95.0), (2.0, 5.0), (3.0, 20.0)]:
        timeline.add(Reading(t, (e,)))
    assert timeline.wraps == 1
    assert timeline.resets == 0
    assert timeline.energy_j.tolist() == pytest.approx([15.0 + 10.0 + 15.0])


def test_a_small_backwards_step_on_a_wrapping_counter_is_a_reset_not_a_wrap() -> None:
    """Going back by less than half the range cannot be a wrap between two polls."""
    timeline = Timeline(gpus(1, wrap_j=100.0))
    for t, e in enumerate([60.0, 70.0, 40.0, 45.0, 50.0, 51.0, 52.0, 53.0]):
        timeline.add(Reading(float(t), (e,)))
    assert (timeline.resets, timeline.wraps) == (1, 0)
    assert timeline.energy_j.tolist() == [10.0 + 53.0]


@settings(max_examples=80, deadline=None)
@given(
    raws=st.lists(st.floats(min_value=0.0, max_value=1000.0, allow_nan=False), min_size=2, max_size=60),
    wrap_j=st.sampled_from([None, 1000.0]),
)
def test_energy_never_decreases_whatever_the_raw_counter_does(
    raws: list[float], wrap_j: float | None
) -> None:
    timeline = Timeline(gpus(1, wrap_j=wrap_j))
    last = 0.0
    for i, raw in enumerate(raws):
        timeline.add(Reading(float(i), (raw,)))
        now = float(timeline.energy_j[0])
        assert now >= last
        last = now
    energies = [e for _, e in edges(timeline)]
    assert energies == sorted(energies)
    backwards = sum(1 for a, b in itertools.pairwise(raws) if b < a)
    assert timeline.resets + timeline.wraps <= backwards
    forward = sum(max(b - a, 0.0) for a, b in itertools.pairwise(raws))
    assert last <= forward + sum(raws) + (wrap_j or 0.0) * timeline.wraps  # nothing from nowhere


def test_a_gain_after_the_counter_stood_still_with_reads_on_time_is_spread_since_it_last_moved() -> None:
    """An independent re-run's case: the counter stands still for 3 s (30 updates not published)
    while the reads come on time, then catches up by 900 J at once. That was made over the 3 s: it is
    spread over the edges made meanwhile (forced ones, each max_tick_s), not put in the last 100 ms."""
    timeline = Timeline([GPU], max_tick_s=1.0)
    value, t = 1000.0, 0.0
    for k in range(100):  # 2 s of 300 W, an update every 100 ms, a read every 20 ms
        t = 0.02 * (k + 1)
        if k % 5 == 4:
            value += 30.0
        timeline.add(Reading(t, (value,)))
    moved_s = t
    for k in range(150):  # 3 s standing still, reads on time
        t = moved_s + 0.02 * (k + 1)
        timeline.add(Reading(t, (value,)))
    t += 0.02
    timeline.add(Reading(t, (value + 900.0,)))
    assert timeline.stood_still == 1 and timeline.stalled_reads == 0
    times, energy, _ = timeline.edges_after(moved_s - 0.021)  # from the last update, dated in its read window
    assert energy[-1] - energy[0] == pytest.approx(900.0)  # nothing added or lost
    power_w = np.diff(energy) / np.diff(times)
    assert len(power_w) >= 3  # the stand's forced edges, then the catch-up
    assert power_w == pytest.approx([300.0] * len(power_w), rel=0.05)  # even over the stand


def test_a_counter_that_updates_every_other_read_schedule_is_not_taken_as_standing_still() -> None:
    """Each device by its own spacing of moves: a counter moving every 200 ms stands still for none."""
    timeline = Timeline([GPU])
    for k in range(200):
        timeline.add(Reading(0.02 * (k + 1), (60.0 * ((k + 1) // 10),)))
    assert timeline.stood_still == 0


def test_sealing_is_held_at_the_last_move_while_a_counter_stands_still_at_most_doubt_hold_s() -> None:
    timeline = Timeline([GPU])
    for k in range(100):  # 2 s: a move every 100 ms, a read every 20 ms
        timeline.add(Reading(0.02 * (k + 1), (30.0 * ((k + 1) // 5),)))
    last_move_s = 2.0
    assert timeline.doubt_hold_s(2.1) is None  # one update period still: nothing to wait for
    assert timeline.doubt_hold_s(2.5) == pytest.approx(last_move_s)  # five: it stands still
    assert timeline.doubt_hold_s(last_move_s + DOUBT_HOLD_S + 1.0) is None  # a dead counter holds no more
