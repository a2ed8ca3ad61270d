"""Properties over random workloads and counter behaviours (hypothesis).

Whatever the work and whatever the counter does — quantized updates, resets
(driver reload), wraps, stalls — every rule conserves energy exactly
(attributed + idle == measured over every sealed tick) and never gives a
request negative energy; measured energy is never negative either.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import Phase, RequestInfo, WorkEvent
from sidecar.attribution.records import RequestEnergy
from sidecar.attribution.rules import RULES, make_rule
from sidecar.meters.base import DeviceInfo, Reading
from sidecar.timeline import Timeline

WRAP_J = 5_000.0


@st.composite
def counter_trace(draw: st.DrawFn) -> tuple[list[Reading], DeviceInfo]:
    """Polls every ~20 ms of a counter updating every ~100 ms, with optional resets and wraps."""
    wraps = draw(st.booleans())
    device = DeviceInfo("GPU-prop", "prop", wrap_j=WRAP_J if wraps else None)
    n_polls = draw(st.integers(20, 200))
    power_w = draw(st.lists(st.floats(0.0, 900.0), min_size=n_polls, max_size=n_polls))
    resets = set(draw(st.lists(st.integers(1, n_polls - 1), max_size=3)))
    quantum = draw(st.sampled_from([1e-3, 1.0]))
    value = draw(st.floats(0.0, WRAP_J - 1.0)) if wraps else draw(st.floats(0.0, 1e6))
    true_energy = 0.0
    readings = []
    t = 0.0
    shown = value
    for i in range(n_polls):
        dt = draw(st.floats(0.015, 0.025))
        t += dt
        true_energy += power_w[i] * dt
        value += power_w[i] * dt
        if i in resets and not wraps:
            value = 0.0
        if wraps:
            value %= WRAP_J
        if i % 5 == 0:  # the counter publishes every ~100 ms
            shown = math.floor(value / quantum) * quantum
        readings.append(Reading(t, (shown,)))
    return readings, device


@st.composite
def work(draw: st.DrawFn, horizon_s: float) -> list[WorkEvent]:
    n = draw(st.integers(0, 40))
    events = []
    for _ in range(n):
        rid = f"r{draw(st.integers(0, 7))}"
        t0 = draw(st.floats(0.0, horizon_s))
        dur = draw(st.sampled_from([0.0, 0.001, 0.02, 0.3, 2.0]))
        phase = draw(st.sampled_from([Phase.PREFILL, Phase.DECODE, Phase.DENOISE]))
        units = draw(st.floats(0.0, 4096.0))
        steps = draw(st.floats(0.0, 50.0))
        ctx = draw(st.floats(0.0, 1e6))
        events.append(WorkEvent(rid, t0, t0 + dur, phase, units, steps, ctx))
    return events


@settings(max_examples=60, deadline=None)
@given(data=st.data(), rule=st.sampled_from(RULES))
def test_conservation_and_non_negativity_hold_for_any_work_and_counter(
    data: st.DataObject, rule: str
) -> None:
    readings, device = data.draw(counter_trace())
    horizon = readings[-1].t_s
    events = data.draw(work(horizon))
    timeline = Timeline([device])
    att = Attributor(
        timeline, make_rule(rule, fit_warmup_ticks=5), request_timeout_s=math.inf, unix_offset=lambda: 0.0
    )
    for event in events:
        att.add_work(event)
    finals: list[RequestEnergy] = []
    first_e = math.inf  # the first edge's energy as first made: a reset's spread may raise it later
    for i, reading in enumerate(readings):
        timeline.add(reading)
        if timeline.edge_count:
            first_e = min(first_e, float(timeline.edges_after(-math.inf)[1][0]))
        if i % 7 == 0:
            finals += att.advance(reading.t_s - 0.05)
    for rid in {e.request_id for e in events}:
        att.add_request(RequestInfo(rid, end_s=horizon))
    finals += att.advance(math.inf)
    totals = att.totals
    assert totals.measured_j >= 0.0
    assert totals.idle_j >= -1e-9
    assert totals.conservation_error_j <= 1e-9 * max(1.0, totals.measured_j)
    assert all(r.energy_j >= 0.0 for r in finals)
    assert all(v >= 0.0 for r in finals for v in r.phase_j.values())
    # every sealed tick's energy came from the counter: the timeline's edges bound it. A reset's energy
    # is spread over the edges since the old counter last moved, sealed ones included, and what a
    # sealed edge gains goes to the next tick (Timeline._spread): so from the first edge as first made
    t_edges, e_edges, _ = timeline.edges_after(-math.inf)
    if t_edges.size >= 2:
        assert totals.measured_j <= float(e_edges[-1]) - first_e + 1e-6
    assert np.all(np.diff(e_edges) >= 0.0)


def test_a_reset_spread_over_a_sealed_edge_is_measured_once_from_the_first_edge_as_made() -> None:
    """Hypothesis's case: a first counter taken as it read, zeros, a reset. The reset's energy is
    spread since the old counter last moved, the first edge (sealed already) included: the first
    edge's energy goes up afterwards, and what it gained reaches the next tick, once."""
    values = [1.0] * 5 + [0.0] * 10 + [0.015] * 5 + [0.0] * 15 + [0.015] * 5 + [0.031] * 5 + [0.046]
    timeline = Timeline([DeviceInfo("GPU-prop", "prop")])
    att = Attributor(timeline, make_rule("fitted", fit_warmup_ticks=5), unix_offset=lambda: 0.0)
    first_e: list[float] = []
    for i, raw in enumerate(values):
        timeline.add(Reading(0.015625 * (i + 1), (raw,)))
        if timeline.edge_count and not first_e:
            first_e.append(float(timeline.edges_after(-math.inf)[1][0]))
        if i % 7 == 0:
            att.advance(0.015625 * (i + 1) - 0.05)
    att.advance(math.inf)
    e_edges = timeline.edges_after(-math.inf)[1]
    assert first_e == [0.015]
    assert float(e_edges[0]) > first_e[0]  # raised by the spread after it was sealed
    assert att.totals.measured_j == pytest.approx(float(e_edges[-1]) - first_e[0])  # 0.061 - 0.015
    assert att.totals.conservation_error_j <= 1e-12
