"""Pending work in blocks: a tick cut from the rows in hand equals one cut from all the work."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.attribution.groups import group_rows
from sidecar.attribution.pending import PendingWork
from sidecar.attribution.tick import EventArrays, TickWork, cut_tick


def block(rng: np.random.Generator, start_s: float, n: int, long_events: bool) -> EventArrays:
    t0 = start_s + rng.uniform(0.0, 0.1, n)
    length = rng.choice([0.0, 0.0125, 0.05, 3.0 if long_events else 0.02], n)
    return EventArrays(
        rng.integers(0, 40, n),
        rng.integers(0, 2, n),
        t0,
        t0 + length,
        rng.uniform(0.0, 10.0, n),
        np.ones(n),
        rng.uniform(0.0, 100.0, n),
        rng.integers(0, 2, n).astype(float),
    )


def all_rows(blocks: list[EventArrays]) -> EventArrays:
    cols = zip(*((b.req, b.phase, b.t0, b.t1, b.units, b.steps, b.ctx, b.timed) for b in blocks), strict=True)
    return EventArrays(*(np.concatenate(c) for c in cols))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), long_events=st.booleans())
def test_sealing_tick_by_tick_from_blocks_equals_sealing_from_one_array(seed: int, long_events: bool) -> None:
    rng = np.random.default_rng(seed)
    pending, everything = PendingWork(), []
    sealed, kept_rows = 0.0, []
    for k in range(30):  # one merge per 100 ms, sealed 0.5 s behind
        b = block(rng, 0.1 * k, int(rng.integers(0, 50)), long_events)
        pending.add(b)
        everything.append(b)
        edge = 0.1 * k - 0.5 + float(rng.uniform(-0.03, 0.03))
        if edge <= sealed:
            continue
        whole = all_rows(everything)
        keep = (whole.t1 > sealed) | ((whole.t1 == whole.t0) & (whole.t0 >= sealed))
        ref = cut_tick(EventArrays(*(c[keep] for c in _cols(whole))), sealed, edge, 1.0)
        got = cut_tick(pending.before(edge), sealed, edge, 1.0)
        assert _rows_of(got) == _rows_of(ref)  # the same rows with the same shares, in any order
        assert ref.busy_s == got.busy_s
        sealed = edge
        pending.drop_consumed(sealed)
        whole_after = all_rows(everything)
        live = (whole_after.t1 > sealed) | ((whole_after.t1 == whole_after.t0) & (whole_after.t0 >= sealed))
        kept_rows.append((len(pending), int(np.count_nonzero(live))))
        assert pending.codes() == set(whole_after.req[live].tolist())
        asked = rng.integers(0, 60, 20).tolist()  # some with pending work, some without
        want = set(whole_after.req[live].tolist())
        assert pending.among(asked).tolist() == [code in want for code in asked]
    assert all(a == b for a, b in kept_rows)


def _rows_of(tick: TickWork) -> list[tuple[float, ...]]:
    """A tick's rows (request, phase, clipped times, units, context, shares), sorted: a row's values do
    not depend on the order of the rows it was cut with; sums over them do, in the last bits."""
    names = ("req", "phase", "a", "b", "units", "ctx", "time_share", "step_share")
    return sorted(zip(*(getattr(tick, name).tolist() for name in names), strict=True))


def _cols(ev: EventArrays) -> tuple[np.ndarray, ...]:
    return (ev.req, ev.phase, ev.t0, ev.t1, ev.units, ev.steps, ev.ctx, ev.timed)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=200))
def test_grouping_a_ticks_rows_matches_numpy_unique(codes: list[int]) -> None:
    req = np.array(codes, dtype=np.int64)
    g = group_rows(req)
    unique, inverse = np.unique(req, return_inverse=True)
    assert g.codes.tolist() == unique.tolist() and g.inverse.tolist() == inverse.tolist()
    assert (
        req[g.order].tolist() == sorted(codes) and g.order.tolist() == np.argsort(req, kind="stable").tolist()
    )
    assert req[g.order][g.starts].tolist() == unique.tolist()


def _rows(req: list[int], t0: list[float], t1: list[float]) -> EventArrays:
    ones = np.ones(len(req))
    return EventArrays(np.asarray(req), ones.astype(int), np.asarray(t0), np.asarray(t1), *(ones,) * 4)


def test_rows_never_taken_in_hand_still_leave_once_consumed() -> None:
    pending = PendingWork()
    pending.add(_rows([1, 2], [0.0, 0.5], [1.0, 2.0]))
    assert len(pending.before(0.6)) == 2
    pending.add(_rows([3, 4, 5], [0.1, 0.2, 2.5], [0.3, 1.2, 3.0]))  # work for time before the hand's edge
    pending.drop_consumed(1.1)  # consumed: 1 (in hand), 3 (never taken in hand)
    assert len(pending) == 3 and pending.codes() == {2, 4, 5}
    assert pending.among([1, 3, 4, 5]).tolist() == [False, False, True, True]
    assert sorted(pending.before(2.6).req.tolist()) == [2, 4, 5]
