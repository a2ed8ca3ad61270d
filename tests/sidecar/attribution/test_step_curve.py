"""Clocked work rows: cut at sealing by their step curve, their rest kept, late parts clipped by it;
conservation with them, whatever the curve and its refits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import DECODE_I, RequestInfo, WorkRows
from sidecar.attribution.records import RequestEnergy
from sidecar.attribution.rules import RULES, make_rule
from sidecar.attribution.step_curve import (
    CLOCKED,
    curve_clip,
    curve_code,
    first_ctx,
    fractions,
    tick_fractions,
)
from sidecar.attribution.tick import EventArrays, cut_tick, keep_rest
from sidecar.timeline import Timeline
from tests.sidecar.attribution.helpers import timeline_with_edges
from tests.sidecar.attribution.test_properties import counter_trace

# Ticks of 30 J each: [0, 0.1], [0.1, 0.2], [0.2, 0.3], [0.3, 0.4]; records final after the next.
EDGES = [(0.0, 0.0), (0.1, 30.0), (0.2, 60.0), (0.3, 90.0), (0.4, 120.0), (0.5, 125.0)]  # then 5 J idle


class Knots:
    """Cumulative steps through the given (t_s, steps) points (a step curve made by hand)."""

    def __init__(self, *points: tuple[float, float]) -> None:
        self.t_s, self.steps = (np.array(c, dtype=float) for c in zip(*points, strict=True))

    def steps_at_many(self, t_s: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.interp(t_s, self.t_s, self.steps)
        return out


LATE = Knots((0.0, 0.0), (0.2, 0.0), (0.4, 20.0))  # every step in the second half


def decode(request_id: str, tokens: float, curve: Knots | None) -> WorkRows:
    """One decode row over [0, 0.4] (prompt 0): clocked by ``curve`` where one is given."""
    one = np.ones(1)
    clocked = None if curve is None else np.array([True])
    ctx = tokens * (tokens + 1) / 2
    return WorkRows(
        (request_id,), np.zeros(1, int), one * DECODE_I, one * 0.0, one * 0.4, one * tokens, one * tokens,
        one * ctx, clocked, curve,
    )  # fmt: skip


def att_info(request_id: str) -> RequestInfo:
    return RequestInfo(request_id, model="m", start_s=0.0, end_s=0.4, output_tokens=21)


def attributor() -> Attributor:
    return Attributor(timeline_with_edges(EDGES), make_rule("tokens"), model="m", unix_offset=lambda: 0.0)


def test_the_context_of_a_decodes_first_tokens_grows_a_token_a_step() -> None:
    p, n = 5.0, 10.0  # tokens 1..10 read 6..15 keys: 105 in all, 6+7+8+9 = 30 for the first four
    whole = n * p + n * (n + 1) / 2
    assert first_ctx(np.array([n]), np.array([whole]), np.array([4.0])).tolist() == [30.0]
    assert first_ctx(np.array([6.0]), np.array([whole - 30.0]), np.array([6.0])).tolist() == [
        75.0
    ]  # the rest
    assert first_ctx(np.array([0.0, 1e-320]), np.array([3.0, 1e300]), np.array([0.0, 1.0])).tolist() == [
        0.0,
        1e300,
    ]


def test_fractions_follow_the_curve_where_clocked_and_time_elsewhere() -> None:
    curves = [LATE]
    code = np.array([CLOCKED, 0.0, CLOCKED])
    e0, e1 = np.array([0.0, 0.0, 0.0]), np.array([0.4, 0.4, 0.1])
    a, b = np.array([0.2, 0.2, 0.0]), np.array([0.3, 0.3, 0.05])
    linear = (b - a) / (e1 - e0)
    got = fractions(curves, code, e0, e1, a, b, linear)
    assert got.tolist() == pytest.approx([0.5, 0.25, 0.5])  # the last: no steps on the curve, by time
    assert curve_code([], LATE) == CLOCKED
    known: list[Knots] = [LATE]
    assert curve_code(known, Knots((0.0, 0.0), (1.0, 1.0))) == CLOCKED - 1 and len(known) == 2


def test_a_ticks_fractions_are_the_fractions_of_its_overlaps() -> None:
    """The tick's shortcut (rows inside it whole; the curve at a row's start only off the tick's
    start) against the plain fractions of each row's overlap, on rows in every position."""
    rng = np.random.default_rng(7)
    curves = [LATE, Knots((-1.0, 0.0), (0.1, 3.0), (0.15, 3.0), (2.0, 50.0))]
    t0_s, t1_s = 0.1, 0.2
    e0 = np.concatenate([rng.uniform(-0.2, 0.3, 300), np.full(100, t0_s)])
    e1 = e0 + rng.uniform(0.0, 0.4, 400)
    keep = (e0 < t1_s) & (e1 > t0_s)
    e0, e1 = e0[keep], e1[keep]
    code = rng.choice([CLOCKED, CLOCKED - 1, 0.0], e0.size)
    a, b = np.maximum(e0, t0_s), np.minimum(e1, t1_s)
    linear = (b - a) / (e1 - e0)
    want = fractions(curves, code, e0, e1, a, b, linear)
    assert tick_fractions(curves, code, e0, e1, (t0_s, t1_s), linear) == pytest.approx(want, abs=1e-12)


def test_a_clipped_clocked_row_loses_the_steps_before_the_cut() -> None:
    cols = (*(np.array([x, x]) for x in (0.0, 0.4, 20.0, 20.0, 210.0)), np.array([CLOCKED, 0.0]))
    curve_clip([Knots((0.0, 0.0), (0.2, 15.0), (0.4, 20.0))], cols, np.array([0, 1]), 0.2)
    t0, _, units, steps, ctx, _ = cols
    assert t0.tolist() == [0.2, 0.2]
    assert units.tolist() == pytest.approx([5.0, 10.0]) and steps.tolist() == pytest.approx([5.0, 10.0])
    assert ctx.tolist() == pytest.approx([16 + 17 + 18 + 19 + 20, 105.0])  # the last five tokens; half


def test_sealing_splits_a_clocked_decode_by_its_curve() -> None:
    """Tokens rule: a's 20 tokens all in the last two ticks, b's 20 evenly: b takes the first two
    ticks whole and a third of the others (5 tokens of 15)."""
    att = attributor()
    att.add_work(decode("a", 20.0, LATE))
    att.add_work(decode("b", 20.0, None))
    for rid in "ab":
        att.add_request(att_info(rid))
    got = {r.request_id: r.energy_j for r in att.advance(math.inf)}
    assert got == pytest.approx({"a": 40.0, "b": 80.0})
    even = attributor()  # the same rows unclocked: equal shares
    even.add_work(decode("a", 20.0, None))
    even.add_work(decode("b", 20.0, None))
    for rid in "ab":
        even.add_request(att_info(rid))
    assert {r.request_id: r.energy_j for r in even.advance(math.inf)} == pytest.approx({"a": 60.0, "b": 60.0})


def test_a_refit_between_seals_shares_the_rest_by_the_new_curve() -> None:
    curve = Knots((0.0, 0.0), (0.4, 40.0))  # even at first
    att = attributor()
    att.add_work(decode("a", 20.0, curve))
    att.add_work(decode("b", 20.0, None))
    att.advance(0.2)  # a: 5 tokens a tick so far, as b
    curve.t_s, curve.steps = np.array([0.0, 0.2, 0.3, 0.4]), np.array([0.0, 10.0, 10.0, 40.0])  # refit
    for rid in "ab":
        att.add_request(att_info(rid))
    got = {r.request_id: r.energy_j for r in att.advance(math.inf)}
    # a's last 10 tokens all in the last tick: 0 of the third tick, 10 of 15 of the last
    assert got == pytest.approx({"a": 15.0 + 15.0 + 0.0 + 20.0, "b": 15.0 + 15.0 + 30.0 + 10.0})


def test_a_late_clocked_decode_is_clipped_by_its_curve() -> None:
    att = attributor()
    att.add_work(decode("b", 20.0, None))
    att.advance(0.2)  # b alone in the first two ticks
    att.add_work(decode("a", 20.0, Knots((0.0, 0.0), (0.2, 15.0), (0.4, 20.0))))  # 5 tokens left after 0.2
    for rid in "ab":
        att.add_request(att_info(rid))
    got = {r.request_id: r.energy_j for r in att.advance(math.inf)}
    assert att.dropped["late_clipped"] == 1
    assert got == pytest.approx({"a": 20.0, "b": 100.0})  # a: 2.5 of 7.5 tokens in each last tick


@st.composite
def curve_knots(draw: st.DrawFn) -> Knots:
    """A made curve over [-0.5, 3]: non-decreasing, flat stretches and jumps allowed."""
    n = draw(st.integers(2, 8))
    t_s = sorted(draw(st.lists(st.floats(-0.5, 3.0), min_size=n, max_size=n, unique=True)))
    steps = np.cumsum(draw(st.lists(st.sampled_from([0.0, 0.5, 3.0, 100.0]), min_size=n, max_size=n)))
    return Knots(*zip(t_s, steps.tolist(), strict=True))


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.tuples(st.floats(0.0, 2.0), st.floats(0.0, 1.0), st.floats(0.0, 500.0)), max_size=20),
    edges=st.lists(st.floats(0.0, 3.1), min_size=2, max_size=30, unique=True),
    curves=st.lists(curve_knots(), min_size=1, max_size=4),
)
def test_whatever_the_curve_and_its_refits_each_clocked_row_gives_out_its_work_exactly_once(
    rows: list[tuple[float, float, float]], edges: list[float], curves: list[Knots]
) -> None:
    """Ticks over every row, the curve replaced (refitted) between ticks: each row's units and
    context are given out in full, none negative, whatever the curve does."""
    t0 = np.array([r[0] for r in rows])
    t1 = t0 + np.array([r[1] for r in rows])
    units = np.array([r[2] for r in rows])
    ctx = units * 7.0 + units * (units + 1) / 2  # a prompt of 7
    cols = (t0, t1, units.copy(), units.copy(), ctx.copy(), np.full(t0.size, CLOCKED))
    ev = EventArrays(np.arange(t0.size), np.ones(t0.size, int), *cols)
    ticks = sorted({0.0, *edges, 3.2})
    curve = Knots((0.0, 0.0), (1.0, 1.0))
    given_units, given_ctx = np.zeros(t0.size), np.zeros(t0.size)
    for k in range(len(ticks) - 1):
        curve.t_s, curve.steps = curves[k % len(curves)].t_s, curves[k % len(curves)].steps  # refitted
        tick = cut_tick(ev, ticks[k], ticks[k + 1], 1.0, [curve])
        keep_rest(ev, tick)
        assert np.all(tick.units >= 0.0) and np.all(tick.ctx >= 0.0) and np.all(tick.step_share >= 0.0)
        np.add.at(given_units, tick.req, tick.units)
        np.add.at(given_ctx, tick.req, tick.ctx)
    assert given_units == pytest.approx(units, rel=1e-9, abs=1e-9)
    assert given_ctx == pytest.approx(ctx, rel=1e-9, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), rule=st.sampled_from(RULES))
def test_clocked_work_keeps_conservation_and_non_negativity_for_any_counter(
    data: st.DataObject, rule: str
) -> None:
    """The conservation property of test_properties.py with clocked decode rows, their curve
    refitted between advances."""
    readings, device = data.draw(counter_trace())
    horizon_s = readings[-1].t_s
    curves = data.draw(st.lists(curve_knots(), min_size=1, max_size=3))
    curve = Knots((0.0, 0.0), (1.0, 1.0))
    att = Attributor(Timeline([device]), make_rule(rule, fit_warmup_ticks=5), unix_offset=lambda: 0.0)
    n = data.draw(st.integers(1, 12))
    t0 = np.array(data.draw(st.lists(st.floats(0.0, horizon_s), min_size=n, max_size=n)))
    t1 = t0 + np.array(data.draw(st.lists(st.sampled_from([0.0, 0.05, 0.3, 2.0]), min_size=n, max_size=n)))
    units = np.array(data.draw(st.lists(st.floats(0.0, 4096.0), min_size=n, max_size=n)))
    ids = tuple(f"r{k}" for k in range(n))
    clocked = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    phase = np.full(n, DECODE_I)
    att.add_work(WorkRows(ids, np.arange(n), phase, t0, t1, units, units, units * 3.0, clocked, curve))
    finals: list[RequestEnergy] = []
    for i, reading in enumerate(readings):
        att.timeline.add(reading)
        if i % 7 == 0:
            knots = curves[i % len(curves)]
            curve.t_s, curve.steps = knots.t_s, knots.steps  # refitted
            finals += att.advance(reading.t_s - 0.05)
    for rid in ids:
        att.add_request(RequestInfo(rid, end_s=horizon_s))
    finals += att.advance(math.inf)
    assert att.totals.conservation_error_j <= 1e-9 * max(1.0, att.totals.measured_j)
    assert all(r.energy_j >= 0.0 for r in finals)
    assert all(v >= 0.0 for r in finals for v in r.phase_j.values())
