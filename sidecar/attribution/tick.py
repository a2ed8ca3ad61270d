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

``n(t)`` comes from a sweep over the sorted event boundaries; everything is
numpy, so a tick with thousands of events costs well under a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EventArrays", "TickWork", "cut_tick"]


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
    timed: np.ndarray  # 1.0: the interval is an engine step as the engine ran it (the scheduler hook)

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


def cut_tick(ev: EventArrays, t0_s: float, t1_s: float, energy_j: float) -> TickWork:
    """Clip the events overlapping ``[t0_s, t1_s)`` and compute their shares."""
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
    units = ev.units[rows] * frac
    ctx = ev.ctx[rows] * frac
    time_share, busy_s = _equal_time_shares(a, b)
    rate = np.where(is_instant, 0.0, ev.steps[rows] / np.where(is_instant, 1.0, dur))
    step_share = np.where(is_instant, ev.steps[rows], time_share * rate)
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
        ev.timed[rows],
    )


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
