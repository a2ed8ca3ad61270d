"""One tick's work, cut out of the pending work events (vectorized).

A tick is the time between two counter edges; its measured energy is exact.
For every work event overlapping the tick this module computes, clipped to
the tick:

* ``units``, ``ctx``: the event's units and attention work (query-key
  pairs), pro rata of the overlap (all of it for an instantaneous event
  inside the tick);
* ``time_share`` (s): the event's share of busy time when every instant is
  shared equally by the events active at that instant, i.e.
  ``∫ 1/n(t) dt`` over the overlap. Summed over events it is the tick's busy
  time, so static power x busy time splits exactly;
* ``step_share``: the event's share of engine steps when each step is shared
  equally by its members (``time_share x steps / duration``). For
  per-iteration events (one event per member per step) it is exactly
  ``1/members`` per step.

A *clocked* row (a decode from a span: ``timed`` < 0, :mod:`.step_curve`) is cut by its engine's
step curve instead of pro rata of time: its units and steps by the curve's steps in the overlap,
its context as a decode's grows. Sealing then keeps only its rest (:func:`keep_rest`), so
a clocked row always starts where the tick that cuts it starts.

``n(t)`` comes from a sweep over the sorted event boundaries; everything is
numpy, so a tick with thousands of events costs well under a millisecond.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sidecar.attribution.step_curve import StepCurve, first_ctx, tick_fractions

__all__ = ["EventArrays", "TickWork", "cut_tick", "keep_rest"]


@dataclass(frozen=True, slots=True)
class EventArrays:
    """Pending work events as parallel arrays (one row per event)."""

    req: np.ndarray  # int request index
    phase: np.ndarray  # int Phase value
    t0: np.ndarray  # s
    t1: np.ndarray  # s
    units: np.ndarray  # tokens or pixel-frame-steps over the whole event
    steps: np.ndarray  # engine steps over the whole event
    ctx: np.ndarray  # context tokens over the whole event
    # 1.0: the interval is an engine step as the engine ran it (the scheduler hook); 0.0: work spread
    # evenly over it; -1 - k: steps that follow step curve k (a decode from a span, .step_curve)
    timed: np.ndarray

    def __len__(self) -> int:
        return int(self.req.size)


@dataclass(frozen=True, slots=True)
class TickWork:
    """The work inside one tick ``[t0_s, t1_s]`` with measured energy ``energy_j``."""

    t0_s: float
    t1_s: float
    energy_j: float
    rows: np.ndarray  # indices into the EventArrays the tick was cut from (valid until it is compacted)
    req: np.ndarray
    phase: np.ndarray
    units: np.ndarray
    ctx: np.ndarray
    time_share: np.ndarray  # s
    step_share: np.ndarray  # steps
    busy_s: float
    a: np.ndarray  # event starts clipped to the tick (s)
    b: np.ndarray  # event ends clipped to the tick (s)
    timed: np.ndarray  # per row: 1.0 for a measured engine step's member (EventArrays.timed)

    @property
    def duration_s(self) -> float:
        return self.t1_s - self.t0_s

    @property
    def idle(self) -> bool:
        return self.rows.size == 0


def cut_tick(
    ev: EventArrays, t0_s: float, t1_s: float, energy_j: float, curves: Sequence[StepCurve] = ()
) -> TickWork:
    """Clip the events overlapping ``[t0_s, t1_s)`` and compute their shares (clocked rows by ``curves``)."""
    if not len(ev):  # an idle sidecar: nothing pending
        return _idle(t0_s, t1_s, energy_j)
    instant = ev.t1 == ev.t0
    overlap = (ev.t0 < t1_s) & (ev.t1 > t0_s)
    inside_instant = instant & (ev.t0 >= t0_s) & (ev.t0 < t1_s)
    rows = np.flatnonzero(overlap | inside_instant)
    if rows.size == 0:
        return _idle(t0_s, t1_s, energy_j)
    e0, e1 = ev.t0[rows], ev.t1[rows]
    a = np.maximum(e0, t0_s)
    b = np.minimum(e1, t1_s)
    dur = e1 - e0
    is_instant = dur <= 0
    frac = np.where(is_instant, 1.0, (b - a) / np.where(is_instant, 1.0, dur))
    units, steps, ctx, timed = ev.units[rows], ev.steps[rows], ev.ctx[rows], ev.timed[rows]
    over_s = dur  # the time the row's steps in the tick were taken over: pro rata, the whole row's
    clocked = timed < 0
    if clocked.any():  # by its curve: its share of the curve's steps, a decode's context
        frac = tick_fractions(curves, timed, e0, e1, (t0_s, t1_s), frac)
        ctx = np.where(clocked, first_ctx(units, ctx, units * frac), ctx * frac)
        steps = np.where(clocked, steps * frac, steps)  # a clocked row's steps in the tick
        over_s = np.where(clocked, b - a, dur)
        timed = np.maximum(timed, 0.0)
    else:
        ctx = ctx * frac
    units = units * frac
    time_share, busy_s = _equal_time_shares(a, b)
    # the steps x the row's time share over the time they took (<= 1: no overflow on a row of 1e-300 s)
    time_part = np.where(over_s > 0, time_share / np.where(over_s > 0, over_s, 1.0), 0.0)
    step_share = np.where(is_instant, steps, steps * time_part)
    return TickWork(
        t0_s,
        t1_s,
        energy_j,
        rows,
        ev.req[rows],
        ev.phase[rows],
        units,
        ctx,
        time_share,
        step_share,
        busy_s,
        a,
        b,
        timed,
    )


def keep_rest(ev: EventArrays, tick: TickWork) -> None:
    """The clocked rows ``tick`` cut that go on past it keep only their rest (in place): they start at
    its end, less the units, steps and context it gave them (:mod:`.step_curve`)."""
    rows = tick.rows
    on = (ev.timed[rows] < 0) & (ev.t1[rows] > tick.t1_s)
    if not on.any():
        return
    at, given_units = rows[on], tick.units[on]
    units = ev.units[at]
    given_steps = ev.steps[at] * np.where(units > 0, given_units / np.where(units > 0, units, 1.0), 0.0)
    ev.t0[at] = tick.t1_s
    ev.units[at] = np.maximum(units - given_units, 0.0)
    ev.steps[at] = np.maximum(ev.steps[at] - given_steps, 0.0)
    ev.ctx[at] = np.maximum(ev.ctx[at] - tick.ctx[on], 0.0)


def _idle(t0_s: float, t1_s: float, energy_j: float) -> TickWork:
    rows, empty = np.zeros(0, dtype=np.intp), np.zeros(0)
    return TickWork(t0_s, t1_s, energy_j, rows, rows, rows, *(empty,) * 4, 0.0, empty, empty, empty)


def _equal_time_shares(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """For intervals [a_i, b_i): ∫ 1/n(t) dt over each, and the measure of their union."""
    bounds = np.unique(np.concatenate([a, b]))
    if bounds.size < 2:
        return np.zeros(a.size), 0.0
    seg_start = bounds[:-1]
    seg_len = np.diff(bounds)
    active = np.searchsorted(np.sort(a), seg_start, side="right") - np.searchsorted(
        np.sort(b), seg_start, side="right"
    )
    per_event = np.where(active > 0, seg_len / np.maximum(active, 1), 0.0)
    cum = np.concatenate([[0.0], np.cumsum(per_event)])
    ia = np.searchsorted(bounds, a)
    ib = np.searchsorted(bounds, b)
    busy_s = float(seg_len[active > 0].sum())
    return cum[ib] - cum[ia], busy_s
