"""The timeline turns raw counter polls into monotone energy with dated update edges.

Each test feeds hand-made :class:`Reading` objects (times in seconds, counters
in joules) and checks what the timeline makes of them: ignored polls, edges and
their dates, forced edges, interpolation, the measured update period, the ring
buffer, and summing devices. Resets and wraps: :mod:`.test_timeline_resets`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.meters.base import DeviceInfo, Reading
from sidecar.timeline import Timeline

GPU = DeviceInfo(id="GPU-0", name="test GPU")


def gpus(n: int, wrap_j: float | None = None) -> list[DeviceInfo]:
    return [DeviceInfo(id=f"GPU-{i}", name="test GPU", wrap_j=wrap_j) for i in range(n)]


def edges(timeline: Timeline) -> list[tuple[float, float]]:
    """Every edge the ring still holds, as (time s, summed energy J)."""
    t, e, _ = timeline.edges_after(-math.inf)
    return list(zip(t.tolist(), e.tolist(), strict=True))


def dithered_polls(start_s: float, end_s: float, period_s: float, seed: int) -> list[float]:
    """Poll times every ``period_s`` ±25 % (uniform), as the poller makes them."""
    rng = np.random.default_rng(seed)
    times, t = [], start_s
    while t < end_s:
        times.append(t)
        t += period_s * rng.uniform(0.75, 1.25)
    return times


def feed(timeline: Timeline, poll_times: Sequence[float], counter_j: Callable[[float], float]) -> None:
    for t in poll_times:
        timeline.add(Reading(t, (counter_j(t),)))


def stepping_counter(first_update_s: float, period_s: float, step_j: float) -> Callable[[float], float]:
    """A counter that gains ``step_j`` at ``first_update_s + k * period_s`` (k = 0, 1, ...)."""

    def value(t: float) -> float:
        return 1000.0 + step_j * max(math.floor((t - first_update_s) / period_s) + 1, 0)

    return value


# ---- the first poll -----------------------------------------------------------------


def test_the_first_poll_is_only_a_base_and_makes_no_edge() -> None:
    timeline = Timeline([GPU])
    assert timeline.add(Reading(5.0, (123_456.0,))) is False
    assert timeline.edge_count == 0
    assert timeline.energy_j.tolist() == [0.0]  # energy counts from the first poll, not from driver load
    assert timeline.energy_at(5.0) == 0.0
    assert timeline.update_period_s() is None


# ---- edges -----------------------------------------------------------------------------


def test_an_edge_is_made_only_when_the_summed_counter_changes() -> None:
    timeline = Timeline([GPU], max_tick_s=100.0)
    made = [timeline.add(Reading(t, (e,))) for t, e in [(0.0, 10.0), (1.0, 10.0), (2.0, 12.0), (3.0, 12.0)]]
    assert made == [False, False, True, False]
    assert timeline.edge_count == 1
    assert timeline.energy_j.tolist() == [2.0]


def test_an_edge_is_dated_at_the_midpoint_of_its_window_before_the_grid_is_known() -> None:
    timeline = Timeline([GPU], max_tick_s=100.0)
    for t, e in [(0.0, 0.0), (1.0, 10.0), (2.0, 10.0), (4.0, 30.0)]:
        timeline.add(Reading(t, (e,)))
    assert edges(timeline) == [(0.5, 10.0), (3.0, 30.0)]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(min_value=1e-3, max_value=0.5),  # seconds since the previous poll
            st.sampled_from([0.0, 0.0, 0.001, 0.5, 40.0]),  # counter gain since the previous poll (J)
        ),
        min_size=1,
        max_size=120,
    )
)
def test_every_edge_is_dated_inside_its_change_window(steps: list[tuple[float, float]]) -> None:
    """The update happened after the previous poll and by this one: (prev poll, this poll]."""
    timeline = Timeline([GPU], max_tick_s=1e9)
    t, raw = 100.0, 0.0
    timeline.add(Reading(t, (raw,)))
    for dt, gain in steps:
        prev_t, t, raw = t, t + dt, raw + gain
        made = timeline.add(Reading(t, (raw,)))
        assert made == (gain > 0)
        if made:
            edge_t = timeline.last_edge_t
            assert prev_t < edge_t <= t
    assert timeline.edge_count == sum(1 for _, gain in steps if gain > 0)


def test_a_grid_dated_edge_is_never_dated_at_the_previous_poll_itself() -> None:
    """A late update (jitter) seen by a poll just after its grid point is still dated after that poll."""
    timeline = Timeline([GPU])
    counter = stepping_counter(first_update_s=0.05, period_s=0.1, step_j=10.0)
    polls = dithered_polls(0.0, 6.0, 0.02, seed=1)
    feed(timeline, polls, counter)
    assert timeline.grid.period_s is not None  # the grid is known
    # The next grid point is 6.05 s; this update comes 1 ms late, at 6.051 s.
    before = timeline.edge_count
    prev_poll = 6.0505  # after the grid point, before the (late) update: still the old value
    timeline.add(Reading(prev_poll, (counter(6.049),)))
    timeline.add(Reading(6.07, (counter(6.049) + 10.0,)))
    assert timeline.edge_count == before + 1
    assert timeline.last_edge_t > prev_poll


# ---- polls that are ignored ------------------------------------------------------------


def test_repeated_and_out_of_order_poll_times_are_ignored_and_counted() -> None:
    timeline = Timeline([GPU])
    timeline.add(Reading(1.0, (100.0,)))
    timeline.add(Reading(2.0, (110.0,)))
    assert timeline.add(Reading(2.0, (500.0,))) is False  # the same instant again
    assert timeline.add(Reading(1.5, (105.0,))) is False  # from the past
    assert timeline.out_of_order == 2
    assert timeline.polls == 2
    assert timeline.energy_j.tolist() == [10.0]
    timeline.add(Reading(3.0, (120.0,)))  # later polls still diff against the last accepted one
    assert timeline.energy_j.tolist() == [20.0]


# ---- forced edges ------------------------------------------------------------------------


def test_a_stalled_counter_makes_forced_edges_every_max_tick_with_unchanged_energy() -> None:
    timeline = Timeline([GPU], max_tick_s=1.0)
    timeline.add(Reading(0.0, (0.0,)))
    timeline.add(Reading(0.02, (5.0,)))  # one real edge, at 0.01
    for k in range(2, 176):  # then 3.5 s without a change, polled every 20 ms
        timeline.add(Reading(k * 0.02, (5.0,)))
    got = edges(timeline)
    assert got[0] == (0.01, 5.0)
    forced = got[1:]
    assert len(forced) == 3
    assert all(e == 5.0 for _, e in forced)
    gaps = np.diff([t for t, _ in got])
    assert np.all(gaps >= 1.0) and np.all(gaps < 1.0 + 0.02 + 1e-9)


def test_no_edge_is_forced_before_the_counter_has_first_changed() -> None:
    """Ticks start at the first real edge; before it there is nothing to cut."""
    timeline = Timeline([GPU], max_tick_s=1.0)
    for k in range(300):
        timeline.add(Reading(k * 0.02, (42.0,)))
    assert timeline.edge_count == 0


def test_forced_edges_do_not_count_towards_the_update_period() -> None:
    timeline = Timeline([GPU], max_tick_s=0.5)
    counter = stepping_counter(first_update_s=0.05, period_s=0.1, step_j=1.0)
    feed(timeline, [k * 0.02 for k in range(60)], counter)  # 1.2 s of updates
    feed(timeline, [1.2 + k * 0.02 for k in range(1, 200)], lambda t: counter(1.19))  # then stalled 4 s
    assert timeline.update_period_s() == pytest.approx(0.1, abs=0.011)


# ---- interpolation ------------------------------------------------------------------------


def test_energy_between_interpolates_linearly_between_edges() -> None:
    timeline = Timeline([GPU])
    for t, e in [(0.0, 0.0), (1.0, 10.0), (2.0, 30.0)]:  # edges (0.5 s, 10 J) and (1.5 s, 30 J)
        timeline.add(Reading(t, (e,)))
    assert timeline.energy_at(1.0) == pytest.approx(20.0)
    assert timeline.energy_between(0.5, 1.5) == pytest.approx(20.0)
    assert timeline.energy_between(0.75, 1.25) == pytest.approx(10.0)
    assert timeline.energy_between(1.0, 1.0) == 0.0


def test_energy_at_by_binary_search_is_np_interp_over_the_ring_wrapped_or_not() -> None:
    """The two edges around a time are found by binary search (the ring was copied whole for each
    call, on the API's event loop); the answer is np.interp's over the edges held."""
    rng = np.random.default_rng(4)
    for steps in (3, 40, 61):  # the ring of 16 not full, wrapped, wrapped again
        timeline = Timeline([GPU], capacity=16)
        for k in range(steps):
            timeline.add(Reading(0.1 * k, (7.0 * k + (k % 3),)))
        times, energy, _ = timeline.edges_after(-math.inf)
        for t_s in [*rng.uniform(-1.0, 0.1 * steps + 1.0, 200), *times]:
            expected = float(np.interp(t_s, times, energy))
            assert timeline.energy_at(float(t_s)) == pytest.approx(expected, abs=1e-9)
        assert timeline.span_s() == (float(times[0]), float(times[-1]))


def test_energy_is_clamped_outside_the_known_edges() -> None:
    timeline = Timeline([GPU])
    for t, e in [(0.0, 0.0), (1.0, 10.0), (2.0, 30.0)]:
        timeline.add(Reading(t, (e,)))
    assert timeline.energy_at(-100.0) == 10.0
    assert timeline.energy_at(100.0) == 30.0
    assert timeline.energy_between(1.5, 99.0) == 0.0


# ---- measured update period ------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_update_period_is_the_counters_period_not_the_poll_period(seed: int) -> None:
    timeline = Timeline([GPU])
    counter = stepping_counter(first_update_s=0.037, period_s=0.1, step_j=12.5)
    feed(timeline, dithered_polls(0.0, 5.0, 0.02, seed), counter)
    period = timeline.update_period_s()
    assert period is not None
    assert period == pytest.approx(0.1, abs=0.005)


def test_update_period_is_unknown_before_three_edges() -> None:
    timeline = Timeline([GPU])
    for t, e in [(0.0, 0.0), (0.1, 1.0), (0.2, 2.0)]:
        timeline.add(Reading(t, (e,)))
    assert timeline.update_period_s() is None
    timeline.add(Reading(0.3, (3.0,)))
    assert timeline.update_period_s() == pytest.approx(0.1)


# ---- bounded memory --------------------------------------------------------------------------


def test_the_ring_buffer_keeps_only_the_newest_capacity_edges() -> None:
    timeline = Timeline([GPU], capacity=8)
    for k in range(21):  # 20 edges at k - 0.5 s with energy k J
        timeline.add(Reading(float(k), (float(k),)))
    assert timeline.edge_count == 20
    t, e, _ = timeline.edges_after(-math.inf)
    assert e.tolist() == [float(k) for k in range(13, 21)]
    assert t.tolist() == pytest.approx([k - 0.5 for k in range(13, 21)])
    assert timeline.energy_j.tolist() == [20.0]  # the running total is not bounded by the ring
    assert timeline.energy_at(0.0) == 13.0  # older edges are gone: clamped to the oldest kept


def test_edges_after_finds_the_same_edges_as_a_full_scan_before_and_after_the_ring_wraps() -> None:
    timeline = Timeline([GPU], capacity=8)
    for k in range(1, 31):  # edges at k - 0.5 s; the ring wraps after 8
        timeline.add(Reading(float(k), (float(k),)))
        t_all, e_all, _, _ = timeline._ordered()  # the reference: the whole ring, in order
        for q in [-math.inf, *np.arange(-1.0, k + 1.0, 0.25).tolist()]:
            t, e, e_dev = timeline.edges_after(q)
            assert t.tolist() == t_all[t_all > q].tolist() and e.tolist() == e_all[t_all > q].tolist()
            assert e_dev[:, 0].tolist() == e.tolist()
            assert timeline.edge_times_after(q).tolist() == t.tolist()


def test_the_update_period_follows_new_edges_and_looks_past_a_long_run_of_forced_ones() -> None:
    timeline = Timeline([GPU], max_tick_s=0.5)
    counter = stepping_counter(first_update_s=0.05, period_s=0.1, step_j=1.0)
    feed(timeline, [k * 0.02 for k in range(60)], counter)
    assert timeline.update_period_s() == pytest.approx(0.1, abs=0.011)
    feed(timeline, [1.2 + k * 0.02 for k in range(1, 7600)], lambda t: counter(1.19))  # 300 forced edges
    assert timeline.update_period_s(recent=8) == pytest.approx(0.1, abs=0.011)
    counter2 = stepping_counter(first_update_s=153.05, period_s=0.2, step_j=1.0)
    feed(timeline, [153.0 + k * 0.02 for k in range(1, 400)], lambda t: counter(1.19) + counter2(t))
    assert timeline.update_period_s(recent=8) == pytest.approx(0.2, abs=0.021)  # recomputed for new edges


# ---- devices -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n_devices", [1, 2, 4])
def test_devices_are_summed_and_kept_per_device(n_devices: int) -> None:
    timeline = Timeline(gpus(n_devices))
    gains = np.arange(1, n_devices + 1, dtype=float)  # device i gains (i + 1) J per poll
    for k in range(4):
        timeline.add(Reading(float(k), tuple(1000.0 * (i + 1) + k * gains[i] for i in range(n_devices))))
    t, e, e_dev = timeline.edges_after(-math.inf)
    assert t.tolist() == [0.5, 1.5, 2.5]
    assert e.tolist() == pytest.approx([gains.sum() * k for k in (1, 2, 3)])
    assert e_dev[-1].tolist() == pytest.approx((3 * gains).tolist())
    assert timeline.energy_j.tolist() == pytest.approx((3 * gains).tolist())


def test_one_device_changing_is_enough_for_an_edge_and_a_reset_on_one_does_not_touch_the_other() -> None:
    timeline = Timeline(gpus(2))
    timeline.add(Reading(0.0, (100.0, 200.0)))
    assert timeline.add(Reading(1.0, (100.0, 205.0))) is True
    timeline.add(Reading(2.0, (105.0, 210.0)))
    for t, e0 in [(3.0, 4.0), (4.0, 5.0), (5.0, 6.0), (6.0, 7.0), (7.0, 8.0), (8.0, 9.0)]:  # device 0 reset
        timeline.add(Reading(t, (e0, 200.0 + 5.0 * t)))
    assert timeline.resets == 1
    assert timeline.energy_j.tolist() == [5.0 + 9.0, 40.0]


def test_a_reading_with_the_wrong_number_of_devices_is_rejected() -> None:
    timeline = Timeline(gpus(2))
    with pytest.raises(ValueError, match="1 devices, timeline has 2"):
        timeline.add(Reading(0.0, (1.0,)))


def test_a_timeline_needs_at_least_one_device() -> None:
    with pytest.raises(ValueError, match="at least one device"):
        Timeline([])


# ---- a read that came late ----------------------------------------------------------


@pytest.mark.parametrize("stall_s", [0.45, 2.2])
def test_a_late_read_that_saw_several_updates_spreads_their_energy_over_its_window(stall_s: float) -> None:
    """Probe 6: on a constant 300 W counter, the poll thread held off its core for 2.2 s. Dated at
    its window's midpoint, the change made the timeline read 562 W for 1.1 s, then 26 W: identical
    requests under preemption (staggered in time) were charged up to 17x apart."""
    timeline = Timeline([GPU])
    counter = stepping_counter(0.037, 0.1, 30.0)  # 300 W, an update every 100 ms
    polls = dithered_polls(0.0, 20.0, 0.02, seed=3)
    stall_at = polls[-1]
    polls += dithered_polls(stall_at + stall_s, stall_at + stall_s + 5.0, 0.02, seed=4)
    feed(timeline, polls, counter)
    assert timeline.stalled_reads == 1
    # every 0.1 s from before the stall to after it: 300 W, give or take one update's 30 J over the
    # stall (the last update a late read saw is dated on the grid, a few ms off: one may be taken for
    # another); dated at the midpoint, the stall's first half read ~2x and its second ~0
    updates = stall_s / 0.1
    for k in range(-5, int((stall_s + 2.0) / 0.1)):
        a = stall_at + 0.1 * k
        assert timeline.energy_between(a, a + 0.1) / 0.1 == pytest.approx(300.0, abs=300.0 / updates + 5), a
    # the long tick the late read closes ends at the last update it saw, or the one before
    after = next(t for t, _ in edges(timeline) if t > stall_at)
    read = polls[polls.index(stall_at) + 1]
    last_update = 0.037 + 0.1 * math.floor((read - 0.037) / 0.1)
    assert last_update - 0.1 - 0.005 <= after <= last_update + 0.005


def test_a_slow_poll_on_purpose_is_not_a_stall() -> None:
    timeline = Timeline([GPU])
    feed(timeline, [0.5 * k for k in range(40)], stepping_counter(0.037, 0.1, 30.0))  # every 5th update
    assert timeline.stalled_reads == 0  # the edges' own spacing is the period it sees
