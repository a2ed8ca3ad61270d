"""Attribute a recorded or simulated run offline, as the live sidecar would.

The same timeline and attributor as the live path, driven by a virtual
clock: counter readings at every poll, work events delivered when they end
(as the vLLM plugin delivers an iteration), request infos at their end, and
ticks sealed ``settle_s`` behind the clock. Used by the accuracy benchmark,
the property tests and for re-analysing a recorded run.
Units: seconds and joules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.attribution.records import RequestEnergy
from sidecar.attribution.rules import make_rule
from sidecar.meters.base import DeviceInfo, Reading
from sidecar.timeline import Timeline

__all__ = ["OfflineResult", "attribute_offline"]


@dataclass(frozen=True, slots=True)
class OfflineResult:
    """Final records by request id, and the attributor (totals, fit, drops)."""

    records: dict[str, RequestEnergy]
    attributor: Attributor


def attribute_offline(
    counter: Callable[[np.ndarray], np.ndarray],
    device: DeviceInfo,
    events: Sequence[WorkEvent],
    requests: Sequence[RequestInfo],
    *,
    duration_s: float,
    rule: str = "fitted",
    poll_s: float = 0.02,
    tick_s: float = 0.1,
    settle_s: float = 0.5,
    model: str = "unknown",
    energy_source: str = "simulated",
) -> OfflineResult:
    """Run ``rule`` over a run whose counter reads ``counter(times_s)`` (J) for one device."""
    timeline = Timeline([device], capacity=max(65536, int(duration_s / poll_s) + 16))
    att = Attributor(
        timeline,
        make_rule(rule),
        model=model,
        energy_source=energy_source,
        request_timeout_s=math.inf,
        unix_offset=lambda: 0.0,
    )
    # The live poller dithers its period by ±25 % so polls do not beat with the counter's grid.
    rng = np.random.default_rng(0)
    steps = poll_s * rng.uniform(0.75, 1.25, size=int(duration_s / poll_s) + 2)
    poll_t = np.cumsum(steps) - steps[0]
    poll_t = poll_t[poll_t <= duration_s + poll_s]
    values = counter(poll_t)
    by_end = sorted(events, key=lambda e: e.t1_s)
    infos = sorted(requests, key=lambda r: r.end_s if r.end_s is not None else math.inf)
    ev_i = info_i = 0
    records: dict[str, RequestEnergy] = {}
    next_tick = tick_s
    for t, value in zip(poll_t.tolist(), values.tolist(), strict=True):
        timeline.add(Reading(t, (value,)))
        if t + 1e-12 < next_tick:
            continue
        next_tick += tick_s
        while ev_i < len(by_end) and by_end[ev_i].t1_s <= t:
            att.add_work(by_end[ev_i])
            ev_i += 1
        while info_i < len(infos) and (infos[info_i].end_s or math.inf) <= t:
            att.add_request(infos[info_i])
            info_i += 1
        for rec in att.advance(t - settle_s):
            records[rec.request_id] = rec
    for event in by_end[ev_i:]:
        att.add_work(event)
    for info in infos[info_i:]:
        att.add_request(info)
    for rec in att.advance(math.inf):
        records[rec.request_id] = rec
    return OfflineResult(records, att)
