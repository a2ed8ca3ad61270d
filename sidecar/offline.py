"""Attribute a recorded or simulated run offline, as the live sidecar would.

The same timeline and attributor as the live path, driven by a virtual
clock: counter readings at every poll, work pulled from a source at every
tick (as the live sidecar drains its taps), and ticks sealed ``settle_s``
behind the clock. A source is ready-made events (:class:`EventSource`: the
simulator's oracle) or recorded bytes fed to a real receiver
(:class:`PayloadSource`: plugin or scheduler-hook datagrams, OTLP exports). Used by the accuracy benchmark,
the property tests and for re-analysing a recorded run.
Units: seconds and joules.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import RequestInfo, StepBatch, Work, WorkEvent
from sidecar.attribution.records import RequestEnergy
from sidecar.attribution.rules import SplitRule, make_rule
from sidecar.attribution.task_labels import Info
from sidecar.meters.base import DeviceInfo, Reading
from sidecar.taps.spans import TapOutput
from sidecar.timeline import Timeline

__all__ = [
    "EventSource",
    "OfflineResult",
    "PayloadSource",
    "Source",
    "attribute_offline",
    "attribute_readings",
]


@dataclass(frozen=True, slots=True)
class OfflineResult:
    """Final records by request id, and the attributor (totals, fit, drops)."""

    records: dict[str, RequestEnergy]
    attributor: Attributor


class Source(Protocol):
    """Anything that hands over work as time passes (a live tap, a replayed stream)."""

    def due(self, now_s: float) -> tuple[Sequence[Work], Sequence[Info]]: ...


class EventSource:
    """Ready-made work events and request infos, each delivered once the clock passes its end."""

    def __init__(self, events: Sequence[WorkEvent | StepBatch], requests: Sequence[RequestInfo]) -> None:
        self._events = sorted(events, key=lambda e: e.t1_s)
        self._infos = sorted(requests, key=lambda r: r.end_s if r.end_s is not None else math.inf)
        self._ev_t = [e.t1_s for e in self._events]
        self._info_t = [r.end_s if r.end_s is not None else math.inf for r in self._infos]
        self._ev_i = self._info_i = 0

    def due(self, now_s: float) -> tuple[list[WorkEvent | StepBatch], list[RequestInfo]]:
        ev_j, info_j = bisect_right(self._ev_t, now_s), bisect_right(self._info_t, now_s)
        out = self._events[self._ev_i : ev_j], self._infos[self._info_i : info_j]
        self._ev_i, self._info_i = max(self._ev_i, ev_j), max(self._info_i, info_j)
        return out


class PayloadSource:
    """Recorded bytes (datagrams, OTLP exports) fed to a real receiver once the clock passes them."""

    def __init__(
        self,
        feed: Callable[[bytes, TapOutput], object],
        payloads: Sequence[tuple[float, bytes]],
    ) -> None:
        self._feed = feed
        self._payloads = sorted(payloads, key=lambda p: p[0])
        self._t = [p[0] for p in self._payloads]
        self._i = 0
        self.now_s = float("-inf")  # the replay's clock (payload time): "now" for receivers that date-check

    def due(self, now_s: float) -> tuple[list[Work], list[Info]]:
        self.now_s = now_s
        out = TapOutput()
        j = bisect_right(self._t, now_s)
        for _, data in self._payloads[self._i : j]:
            self._feed(data, out)
        self._i = max(self._i, j)
        return list(out.events), out.infos


def attribute_offline(
    counter: Callable[[np.ndarray], np.ndarray],
    device: DeviceInfo,
    source: Source,
    *,
    duration_s: float,
    rule: str | SplitRule = "fitted",
    poll_s: float = 0.02,
    tick_s: float = 0.1,
    settle_s: float = 0.5,
    model: str = "unknown",
    energy_source: str = "simulated",
) -> OfflineResult:
    """Run ``rule`` over a run whose counter reads ``counter(times_s)`` (J) for one device."""
    # The live poller dithers its period by ±25 % so polls do not beat with the counter's grid.
    rng = np.random.default_rng(0)
    steps = poll_s * rng.uniform(0.75, 1.25, size=int(duration_s / poll_s) + 2)
    poll_t = np.cumsum(steps) - steps[0]
    poll_t = poll_t[poll_t <= duration_s + poll_s]
    values = counter(poll_t)
    readings = (Reading(t, (v,)) for t, v in zip(poll_t.tolist(), values.tolist(), strict=True))
    return attribute_readings(
        readings,
        [device],
        source,
        rule=rule,
        tick_s=tick_s,
        settle_s=settle_s,
        model=model,
        energy_source=energy_source,
        capacity=int(duration_s / poll_s) + 16,
    )


def attribute_readings(
    readings: Iterable[Reading],
    devices: Sequence[DeviceInfo],
    source: Source,
    *,
    rule: str | SplitRule = "fitted",
    tick_s: float = 0.1,
    settle_s: float = 0.5,
    model: str = "unknown",
    energy_source: str = "replay",
    capacity: int = 65536,
) -> OfflineResult:
    """Run ``rule`` over counter readings (sorted by time) and the work ``source`` hands over."""
    timeline = Timeline(list(devices), capacity=max(65536, capacity))
    att = Attributor(
        timeline,
        make_rule(rule) if isinstance(rule, str) else rule,
        model=model,
        energy_source=energy_source,
        request_timeout_s=math.inf,
        unix_offset=lambda: 0.0,
    )
    records: dict[str, RequestEnergy] = {}
    next_tick: float | None = None
    for reading in readings:
        timeline.add(reading)
        t = reading.t_s
        next_tick = t + tick_s if next_tick is None else next_tick
        if t + 1e-12 < next_tick:
            continue
        next_tick += tick_s
        _ingest(att, source.due(t))
        doubt = timeline.doubt_hold_s(t)  # a device's bad reads: sealing waits for their energy
        for rec in att.advance(t - settle_s if doubt is None else min(t - settle_s, doubt)):
            records[rec.request_id] = rec
    _ingest(att, source.due(math.inf))
    for rec in att.advance(math.inf):
        records[rec.request_id] = rec
    return OfflineResult(records, att)


def _ingest(att: Attributor, due: tuple[Sequence[Work], Sequence[Info]]) -> None:
    events, infos = due
    att.ingest(events, infos)
