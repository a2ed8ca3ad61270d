"""Spans' work: one decode row a request, cut as its ticks are sealed by the step clock as fitted then."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar.attribution.events import WorkRows
from sidecar.attribution.step_curve import CLOCKED
from sidecar.attribution.tick import EventArrays, cut_tick, keep_rest
from sidecar.taps.span_work import phase_rows
from sidecar.taps.step_clock import StepClock


def spans(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """Requests ending over 6 s: end, prompt, completion, prefill and decode seconds."""
    end = rng.uniform(3.0, 9.0, n)
    return (
        end,
        rng.integers(1, 400, n),
        rng.integers(1, 300, n),
        rng.uniform(0.01, 0.2, n),
        rng.uniform(0.2, 2.5, n),
    )


def fitted(end: np.ndarray, completion: np.ndarray, decode_s: np.ndarray) -> StepClock:
    clock = StepClock()
    decoding = completion > 1
    clock.observe_many((end - decode_s)[decoding], end[decoding], (completion - 1)[decoding].astype(float))
    clock.fit()
    return clock


def arrays(rows: WorkRows) -> EventArrays:
    """The rows as the attributor keeps them (copies: sealing changes a clocked row's rest)."""
    cols = (rows.t0_s, rows.t1_s, rows.units, rows.steps, rows.context_tokens)
    assert rows.clocked is not None
    timed = np.where(rows.clocked, CLOCKED, 0.0)
    return EventArrays(rows.member.copy(), rows.phase.copy(), *(c.astype(float) for c in cols), timed)


def per_tick(ev: EventArrays, edges: np.ndarray, n: int, clock: StepClock) -> np.ndarray:
    """Units and context tokens per tick, request and phase (``cut_tick`` then ``keep_rest``: as
    sealing splits them)."""
    out = []
    for k in range(edges.size - 1):
        tick = cut_tick(ev, float(edges[k]), float(edges[k + 1]), 1.0, [clock])
        keep_rest(ev, tick)
        key = tick.req * 4 + tick.phase
        out.append([np.bincount(key, weights=w, minlength=4 * n) for w in (tick.units, tick.ctx)])
    return np.asarray(out)


def exact_decode(clock: StepClock, spans_: tuple[np.ndarray, ...], edges: np.ndarray) -> np.ndarray:
    """Each request's decode tokens and context tokens in each tick, from the fitted rate itself:
    the tokens between two times are the rate's steps between them, in token order."""
    end, prompt, completion, _, decode_s = spans_
    t0, n = end - decode_s, (completion - 1).astype(float)
    steps = clock.steps_at_many
    total = steps(end) - steps(t0)
    out = np.zeros((edges.size - 1, 2, 4 * end.size))
    for k in range(edges.size - 1):
        a, b = np.maximum(t0, edges[k]), np.minimum(end, edges[k + 1])
        on = np.flatnonzero((b > a) & (n > 0))
        done = n[on] * (steps(a[on]) - steps(t0[on])) / total[on]
        tokens = n[on] * (steps(b[on]) - steps(a[on])) / total[on]
        ctx = tokens * prompt[on] + ((done + tokens) * (done + tokens + 1) - done * (done + 1)) / 2
        out[k, 0, on * 4 + 1], out[k, 1, on * 4 + 1] = tokens, ctx
    return out


def test_a_decode_is_one_row_and_each_tick_gets_the_fitted_rates_work() -> None:
    rng = np.random.default_rng(3)
    work = spans(rng, 200)
    end, prompt, completion, prefill_s, decode_s = work
    ids = tuple(f"r{i}" for i in range(end.size))
    edges = np.arange(0.0, 9.2, 0.1) + 0.037  # the counter's edges, past the last end (9 s)
    clock = fitted(end, completion, decode_s)
    rows = phase_rows(ids, end, prompt, completion, prefill_s, decode_s, clock)
    assert len(rows) == int((prompt > 0).sum() + (completion > 1).sum())  # one prefill, one decode
    assert rows.curve is clock and rows.clocked is not None
    assert rows.clocked.tolist() == (rows.phase == 1).tolist()
    decode = per_tick(arrays(rows), edges, end.size, clock)
    decode[:, :, 0::4] = 0.0  # prefill: spread evenly, one row
    assert decode == pytest.approx(exact_decode(clock, work, edges), rel=1e-9, abs=1e-6)


def test_a_refit_between_ticks_moves_the_rest_and_the_tokens_still_add_up() -> None:
    rng = np.random.default_rng(4)
    work = spans(rng, 200)
    end, prompt, completion, prefill_s, decode_s = work
    ids = tuple(f"r{i}" for i in range(end.size))
    clock = fitted(end, completion, decode_s)
    ev = arrays(phase_rows(ids, end, prompt, completion, prefill_s, decode_s, clock))
    first = per_tick(ev, np.arange(0.0, 5.0, 0.1), end.size, clock)
    clock.observe_many(np.full(50, 4.0), np.full(50, 6.0), np.full(50, 400.0))  # a burst of fast steps
    clock.fit()
    later = per_tick(ev, np.arange(4.9, 9.2, 0.1), end.size, clock)
    got = first.sum(axis=0) + later.sum(axis=0)  # units and context tokens per request and phase
    n = (completion - 1).clip(min=0).astype(float)
    assert got[0, 1::4] == pytest.approx(n, rel=1e-9, abs=1e-9)
    assert got[1, 1::4] == pytest.approx(n * prompt + n * (n + 1) / 2, rel=1e-9, abs=1e-6)
    assert got[0, 0::4] == pytest.approx(prompt.astype(float), rel=1e-9)


def test_a_decode_the_clock_does_not_observe_is_spread_evenly() -> None:
    """Longer than the clock's horizon (a forged day-long decode), or of no length: not clocked."""
    clock = fitted(*(np.array(x) for x in ([5.0, 6.0], [40, 40], [2.0, 3.0])))
    end, decode_s = np.array([86_400.0, 7.0, 8.0]), np.array([86_000.0, 0.0, 1.0])
    ones = np.ones(3)
    rows = phase_rows(("a", "b", "c"), end, ones * 10, ones * 20, ones * 0.1, decode_s, clock)
    decode = rows.phase == 1
    assert rows.clocked is not None and rows.clocked[decode].tolist() == [False, False, True]
