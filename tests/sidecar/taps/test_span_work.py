"""Spans' work cut at the counter's known edges: fewer rows, and every tick gets the same work."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar.attribution.events import WorkRows
from sidecar.attribution.tick import EventArrays, cut_tick
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
    cols = (rows.t0_s, rows.t1_s, rows.units, rows.steps, rows.context_tokens)
    return EventArrays(rows.member, rows.phase, *cols, np.zeros(len(rows.member)))


def per_tick(ev: EventArrays, edges: np.ndarray, n: int) -> np.ndarray:
    """Units and context tokens per tick, request and phase (``cut_tick``: as attribution splits them)."""
    out = []
    for k in range(edges.size - 1):
        tick = cut_tick(ev, float(edges[k]), float(edges[k + 1]), 1.0)
        key = tick.req * 4 + tick.phase
        out.append([np.bincount(key, weights=w, minlength=4 * n) for w in (tick.units, tick.ctx)])
    return np.asarray(out)


def exact_decode(clock: StepClock, spans_: tuple[np.ndarray, ...], edges: np.ndarray) -> np.ndarray:
    """Each request's decode tokens and context tokens in each tick, from the fitted rate itself:
    the tokens between two times are the rate's steps between them, in token order."""
    end, prompt, completion, _, decode_s = spans_
    t0, n = end - decode_s, (completion - 1).astype(float)
    steps = clock._steps
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


def test_cut_at_the_known_edges_each_tick_gets_the_fitted_rates_work_from_fewer_rows() -> None:
    rng = np.random.default_rng(3)
    work = spans(rng, 200)
    end, prompt, completion, prefill_s, decode_s = work
    ids = tuple(f"r{i}" for i in range(end.size))
    edges = np.arange(0.0, 8.0, 0.1) + 0.037  # the counter's edges known so far (the last, 7.937 s)
    clock = fitted(end, completion, decode_s)
    by_rate = phase_rows(ids, end, prompt, completion, prefill_s, decode_s, clock)
    by_tick = phase_rows(ids, end, prompt, completion, prefill_s, decode_s, clock, edges)
    assert len(by_tick) < 0.8 * len(by_rate)
    assert by_tick.units.sum() == pytest.approx(by_rate.units.sum())
    assert by_tick.context_tokens.sum() == pytest.approx(by_rate.context_tokens.sum())
    decode = per_tick(arrays(by_tick), edges, end.size)
    decode[:, :, 0::4] = 0.0  # prefill: one row either way
    assert decode == pytest.approx(exact_decode(clock, work, edges), rel=1e-9, abs=1e-6)
    # cut where the rate changes, a piece spreads its tokens evenly over the ticks it spans: the
    # units within the merge tolerance, the context tokens (quadratic in position) less closely
    rate_units = per_tick(arrays(by_rate), edges, end.size)[:, 0, 1::4]
    assert rate_units == pytest.approx(decode[:, 0, 1::4], rel=0.01, abs=1e-6)
