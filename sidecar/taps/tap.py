"""The seam every tap plugs into: :class:`Tap` (start, stop, due, stats).

A tap is one way work reaches the sidecar: the OTLP span receiver, the vLLM
plugin + /metrics taps, a simulated workload. The sidecar holds an ordered
list of taps (built in :mod:`sidecar.wiring`); at each tick it drains them in
that order, so a tap whose output another depends on comes first (the vLLM
plugin's claims before the spans that would otherwise duplicate its work).

``start()`` binds its socket or thread and returns the bound port (0 if it has
none; an ``OSError`` if it cannot bind, which the sidecar reports naming the
tap's ``knob``); ``stop(grace_s)`` undoes that, also after a failed start;
``due(now_s)`` returns the work events and request infos made since the last
call (sidecar monotonic seconds); ``stats()`` returns the tap's counters for
the self-metrics. A tap that receives on other threads may also be :class:`Cuts`: at each
tick every such tap's ``cut()`` runs before any ``due``, and its ``due`` then hands on only
what had arrived by the cut, so what a later tap hands on can never have arrived after what an
earlier tap drained (the OTLP receiver: a span is handled only after every claim sent before it
was drained, however long the tick takes). A span handler
(:class:`~sidecar.taps.spans.SpanHandler`) is not a tap: it lives inside the
OTLP receiver, which reports its handlers' counters with its own.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from sidecar.attribution.events import Work
from sidecar.attribution.records import TapReport
from sidecar.attribution.task_labels import Info

__all__ = ["Cuts", "Sends", "SourceTap", "Tap", "WorkSource", "due_isolated", "merge_reports", "seal_until"]

log = logging.getLogger(__name__)


class WorkSource(Protocol):
    """Anything with work to drain at each tick (a simulated workload's feeder)."""

    def due(self, now_s: float) -> tuple[Sequence[Work], Sequence[Info]]:
        """Work events and request infos (tasks named by id among them) that have happened by ``now_s``."""
        ...


class Tap(WorkSource, Protocol):
    """A work source with a lifetime and counters."""

    knob: str  # the config knob of the port it listens on ('' for none): named when start() fails

    def start(self) -> int:
        """Start serving; the bound port, or 0 for a tap without one."""
        ...

    def stop(self, grace_s: float = 1.0) -> None:
        """Stop serving (idempotent; safe on a tap that never started)."""
        ...

    def stats(self) -> TapReport:
        """The tap's counters, for the ``jouletrace.tap.*`` self-metrics."""
        ...


@runtime_checkable
class Sends(Protocol):
    """A tap that also sends downstream (the span forwarder): closed only after the stop has sealed
    and stored everything, so a slow or hung downstream cannot cost the stop its records."""

    def close_output(self, grace_s: float) -> None:
        """Send what is queued within ``grace_s`` seconds, drop (and count) the rest, close."""
        ...


@runtime_checkable
class Cuts(Protocol):
    """A tap whose ``due`` can be limited to what arrived by the start of the tick."""

    def cut(self) -> None:
        """Mark the start of a tick: the next ``due`` hands on only what arrived by now."""
        ...


class SourceTap:
    """A plain :class:`WorkSource` as a tap: nothing to start, nothing to count."""

    knob = ""

    def __init__(self, source: WorkSource) -> None:
        self.source = source

    def start(self) -> int:
        return 0

    def stop(self, grace_s: float = 1.0) -> None:
        return None

    def due(self, now_s: float) -> tuple[Sequence[Work], Sequence[Info]]:
        return self.source.due(now_s)

    def stats(self) -> TapReport:
        return TapReport()


def due_isolated(
    tap: WorkSource, now_s: float, failures: Counter[str]
) -> tuple[Sequence[Work], Sequence[Info]]:
    """``tap.due(now_s)``; a tap that raises (a bug: a tap counts what it refuses) gives nothing this
    tick, is counted in ``failures`` under ``tap:<its class>`` (the ``job_failures`` self-metric) and
    logged, and the taps after it and the tick's sealing go on: one tap's fault cannot cost the
    others' work, nor stop records becoming final."""
    try:
        return tap.due(now_s)
    except Exception:
        name = f"tap:{type(tap).__name__}"
        failures[name] += 1
        log.exception("%s failed to hand on its work (%d time(s) so far)", name, failures[name])
        return (), ()


def seal_until(
    taps: Iterable[object], now_s: float, settle_s: float, *, backlog_high: bool = False
) -> tuple[float, bool]:
    """How far a tick seals: ``now - settle_s``, or earlier where a tap still waits for work it knows
    is coming (its ``hold_s(now)``: a diffusion pipeline call begun, reported when it ends); and
    whether a hold was let go. With ``backlog_high`` (the work waiting to be split is near its cap)
    no hold is kept: a hold that lasted (one span from any OTLP sender can start one, for up to
    ``diffusion_max_batch_s``) must not make ``max_pending_rows`` drop the measured work of other
    requests; the held call's work, when it comes, is then late for the time sealed meanwhile."""
    until = now_s - settle_s
    held = until
    for tap in taps:
        hold = getattr(tap, "hold_s", None)
        at = hold(now_s) if callable(hold) else None
        if at is not None and at < held:
            held = at
    if held < until and backlog_high:
        return until, True
    return held, False


def merge_reports(reports: Iterable[TapReport]) -> TapReport:
    """One report from many (later reports win on a repeated key)."""
    merged = TapReport()
    for report in reports:
        merged.events.update(report.events)
        merged.token_mismatch.update(report.token_mismatch)
        merged.server.update(report.server)
    return merged
