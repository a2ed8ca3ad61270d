"""Work rows whose steps follow an engine's step clock, cut where and when their ticks are sealed.

A request's decode from its span is one row: ``n`` tokens over ``[first token, end]``, one
engine step each, but not evenly in time: every running request advances one token per
engine step, so its tokens follow the engine's step rate (:class:`~sidecar.taps.step_clock.
StepClock`, fitted from every span's window). Such a row is *clocked*: its ``timed`` column
holds ``-1 - k`` for curve ``k`` of the attributor (:data:`CLOCKED` and below), and the part of
it inside a tick is the curve's steps there over the curve's steps from the row's start to its
end, ``(S(b) - S(a)) / (S(e1) - S(e0))``, with ``S`` the cumulative steps as fitted *now*.

Cutting at sealing, not when the span arrives, keeps one row a span pending in place of one a
tick it spans (memory and CPU of a flood: docs/deploy.md), and cuts at the ticks as they are,
with the clock fitted on more windows. The clock is refitted while a row waits, so after
each tick a clocked row keeps only its rest (:func:`~sidecar.attribution.tick.keep_rest`): it
starts at the tick's end with the units, steps and context not yet given out, and the next tick
shares that rest by the curve as fitted then. A request's tokens thus add up to its count
exactly, whatever the refits.

Context (query-key pairs) of a decode grows by one token each step: the ``k`` tokens after
``d`` of a request with prompt ``p`` read ``k (p + d) + k (k + 1) / 2`` (:func:`first_ctx`, from
the row's own units and context, without ``p`` or ``d``). Units: s, steps, tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

__all__ = ["CLOCKED", "StepCurve", "curve_clip", "curve_code", "first_ctx", "fractions", "tick_fractions"]

CLOCKED = -1.0  # the ``timed`` code of curve 0; curve k: -1 - k


class StepCurve(Protocol):
    """An engine's cumulative steps over time, as fitted now."""

    def steps_at_many(self, t_s: np.ndarray) -> np.ndarray:
        """Steps from a fixed origin to each time (non-decreasing in time)."""
        ...


def curve_code(curves: list[StepCurve], curve: StepCurve) -> float:
    """The ``timed`` code of ``curve``: added to ``curves`` the first time it is seen."""
    for k, known in enumerate(curves):
        if known is curve:
            return CLOCKED - k
    curves.append(curve)
    return CLOCKED - (len(curves) - 1)


def fractions(
    curves: Sequence[StepCurve],
    code: np.ndarray,
    e0: np.ndarray,
    e1: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    linear: np.ndarray,
) -> np.ndarray:
    """Each row's share of its steps in ``[a, b]`` within ``[e0, e1]``: by its curve where ``code`` names
    one (< 0), else (and where the curve has no steps over the row, or no finite ones) ``linear``."""
    frac = linear.copy()
    for curve, at in _rows_by_curve(curves, code):
        s = curve.steps_at_many(np.concatenate([e0[at], e1[at], a[at], b[at]])).reshape(4, at.size)
        _put_shares(frac, at, (s[0], s[1]), (s[2], s[3]))
    return frac


def tick_fractions(
    curves: Sequence[StepCurve],
    code: np.ndarray,
    e0: np.ndarray,
    e1: np.ndarray,
    tick: tuple[float, float],
    linear: np.ndarray,
) -> np.ndarray:
    """:func:`fractions` of rows ``[e0, e1]`` in a tick ``[t0_s, t1_s]`` they overlap, evaluating each
    curve as little as a tick needs: a clocked row inside the tick is all there (its rest starts at
    the tick's start, or in it, and ends in it); one that goes on needs its curve at its end, and at
    its start only where that is not the tick's."""
    t0_s, t1_s = tick
    frac = linear.copy()
    for curve, at in _rows_by_curve(curves, code):
        inside = (e0[at] >= t0_s) & (e1[at] <= t1_s)
        frac[at[inside]] = 1.0
        at = at[~inside]
        if not at.size:
            continue
        r0, r1 = e0[at], e1[at]
        s_t0, s_t1 = curve.steps_at_many(np.array([t0_s, t1_s])).tolist()
        s_e0 = np.full(at.size, s_t0)
        moved = np.flatnonzero(r0 != t0_s)  # a rest starts where the last tick ended: this one's start
        s_e0[moved] = curve.steps_at_many(r0[moved])
        s_e1 = curve.steps_at_many(r1)
        s_a, s_b = np.where(r0 > t0_s, s_e0, s_t0), np.where(r1 < t1_s, s_e1, s_t1)
        _put_shares(frac, at, (s_e0, s_e1), (s_a, s_b))
    return frac


def _rows_by_curve(curves: Sequence[StepCurve], code: np.ndarray) -> Iterator[tuple[StepCurve, np.ndarray]]:
    """Each curve with the positions of the rows ``code`` says follow it (curves no row follows left out)."""
    for k, curve in enumerate(curves):
        at = np.flatnonzero(code == CLOCKED - k)
        if at.size:
            yield curve, at


def _put_shares(
    frac: np.ndarray, at: np.ndarray, row: tuple[np.ndarray, np.ndarray], part: tuple[np.ndarray, np.ndarray]
) -> None:
    """``frac[at]`` = the curve's steps over ``part`` over its steps over ``row`` (cumulative steps at
    their ends), in [0, 1]; left as it was where the row has no steps on the curve, or none finite."""
    total = row[1] - row[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.clip((part[1] - part[0]) / total, 0.0, 1.0)
    good = np.isfinite(share) & (total > 0)
    frac[at[good]] = share[good]


def first_ctx(units: np.ndarray, ctx: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The context of the first ``k`` of a decode's ``units`` tokens, whose context is ``ctx`` in all
    (one more token read each step); ``ctx`` pro rata where that ramp overflows, none where ``units``
    is not positive."""
    safe = np.where(units > 0, units, 1.0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        part = np.clip(k / safe, 0.0, 1.0)
        c0 = ctx / safe - (units + 1.0) / 2.0  # the context before its first token: p + d
        ramp = k * np.maximum(c0, 0.0) + k * (k + 1.0) / 2.0
    ramp = np.where(np.isfinite(ramp), np.minimum(ramp, ctx), ctx * part)
    out: np.ndarray = np.where(units > 0, ramp, 0.0)
    return out


def curve_clip(
    curves: Sequence[StepCurve],
    cols: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    at: np.ndarray,
    from_s: float,
) -> None:
    """Rows ``at`` of ``cols`` (start, end, units, steps, context, timed) lose their part before
    ``from_s`` (in place): pro rata of time, or by their curve where clocked (late work clipped at the
    sealed edge)."""
    t0, t1, units, steps, ctx, timed = cols
    e0, e1 = t0[at], t1[at]
    cut = np.full(at.size, from_s)
    gone = fractions(curves, timed[at], e0, e1, e0, cut, (cut - e0) / (e1 - e0))
    ctx_gone = np.where(timed[at] < 0, first_ctx(units[at], ctx[at], units[at] * gone), ctx[at] * gone)
    units[at] *= 1.0 - gone
    steps[at] *= 1.0 - gone
    ctx[at] -= ctx_gone
    t0[at] = from_s
