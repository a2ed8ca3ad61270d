"""Spans as the taps see them: decoded once from OTLP, plain Python afterwards.

Times are converted at this edge: OTLP carries Unix nanoseconds; the sidecar
works on its monotonic clock. :class:`WallToMono` maps one to the other with
an offset read when the span arrives (both clocks tick at the same rate; the
offset only moves if the wall clock is stepped, e.g. by NTP).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sidecar.attribution.events import RequestInfo, StepBatch, WorkEvent
from sidecar.attribution.records import TapReport

__all__ = ["ReceivedSpan", "SpanHandler", "TapOutput", "WallToMono"]

AttrValue = str | bool | int | float | list[Any]


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """One span from an OTLP export; times in Unix seconds, ids in lowercase hex."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start_unix_s: float
    end_unix_s: float
    attributes: dict[str, AttrValue] = field(default_factory=dict)
    resource: dict[str, AttrValue] = field(default_factory=dict)
    scope: str = ""


@dataclass(slots=True)
class TapOutput:
    """What a handler made of spans: work events and request infos (sidecar clock)."""

    events: list[WorkEvent | StepBatch] = field(default_factory=list)
    infos: list[RequestInfo] = field(default_factory=list)


class SpanHandler(Protocol):
    """Turns the spans it knows into work; returns False for spans that are not its own.

    A handler may also have ``flush(out)``: the receiver calls it once after each drain,
    for work a handler makes from a batch of spans at once (the vLLM handler's step clock).
    """

    def handle(self, span: ReceivedSpan, out: TapOutput) -> bool: ...

    def stats(self) -> TapReport:
        """The handler's counters (reported with the OTLP receiver's)."""
        ...


class WallToMono:
    """Unix seconds -> sidecar monotonic seconds."""

    def __init__(
        self, wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic
    ) -> None:
        self._wall = wall
        self._mono = mono

    def __call__(self, unix_s: float) -> float:
        return unix_s - (self._wall() - self._mono())
