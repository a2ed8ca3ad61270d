"""Spans as the taps see them: decoded once from OTLP, plain Python afterwards.

Times are converted at this edge: OTLP carries Unix nanoseconds; the sidecar
works on its monotonic clock. :class:`WallToMono` maps one to the other with
an offset read when the span arrives (both clocks tick at the same rate; the
offset only moves if the wall clock is stepped, e.g. by NTP).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from sidecar.attribution.events import StepBatch, WorkEvent, WorkRows
from sidecar.attribution.records import TapReport
from sidecar.attribution.task_labels import Info

if TYPE_CHECKING:
    from sidecar.taps.span_rows import RowSpec
    from sidecar.taps.validate import Reasons

__all__ = ["ReceivedSpan", "RowHandler", "SpanHandler", "SpanRows", "TapOutput", "WallToMono", "attr_value"]

AttrValue = str | bool | int | float | list[Any]


def attr_value(v: AnyValue) -> AttrValue:
    """An OTLP attribute value as plain Python (an array as a list; a kind not read here as its text)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "array_value":
        return [attr_value(x) for x in v.array_value.values]
    return str(v) if kind else ""


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
class SpanRows:
    """Spans of one kind as columns: only what their row handler reads (:mod:`.span_rows`).

    Row ``i``: ids as sent (bytes), times in Unix seconds, the id attribute as sent
    (checked by the handler), ``values[i, j]`` the ``j``-th numeric attribute of the
    handler's :class:`~sidecar.taps.span_rows.RowSpec` and ``kinds[i, j]`` what it was
    (0 absent, 1 a number, 2 not a number). About 250 bytes a span, queued.
    """

    trace_ids: list[bytes]
    span_ids: list[bytes]
    start_unix_s: np.ndarray
    end_unix_s: np.ndarray
    ids: list[AttrValue]
    values: np.ndarray  # (n, k) float64
    kinds: np.ndarray  # (n, k) int8

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, keep: list[int]) -> SpanRows:
        """The rows at ``keep`` (in that order)."""
        at = np.asarray(keep, dtype=np.int64)
        return SpanRows(
            [self.trace_ids[i] for i in keep],
            [self.span_ids[i] for i in keep],
            self.start_unix_s[at],
            self.end_unix_s[at],
            [self.ids[i] for i in keep],
            self.values[at],
            self.kinds[at],
        )


@dataclass(slots=True)
class TapOutput:
    """What a handler made of spans: work events and request infos (sidecar clock)."""

    events: list[WorkEvent | StepBatch | WorkRows] = field(default_factory=list)
    infos: list[Info] = field(default_factory=list)  # request infos, and tasks named by id
    # a UDP drain stopped with datagrams maybe still waiting (its budget spent): a sender not heard
    # from since may have sent meanwhile, so its silence proves nothing (:mod:`.senders`)
    behind: bool = False


class SpanHandler(Protocol):
    """Turns the spans it knows into work; returns False for spans that are not its own.

    A handler may also have ``flush(out)``: the receiver calls it once after each drain,
    for work a handler makes from a batch of spans at once (the vLLM handler's step clock).
    """

    def handle(self, span: ReceivedSpan, out: TapOutput) -> bool: ...

    def stats(self) -> TapReport:
        """The handler's counters (reported with the OTLP receiver's)."""
        ...


class RowHandler(SpanHandler, Protocol):
    """A span handler that also takes its spans as columns: the receiver decodes the spans that
    ``row_spec()`` names straight into :class:`SpanRows` (no dict per span) and hands them to
    ``handle_rows``, which returns the rejected rows' counts (``rejected_<reason>``, ``internal_errors``).
    ``row_spec()`` is None while the handler needs whole spans (e.g. to forward them)."""

    def row_spec(self) -> RowSpec | None: ...

    def check_rows(self, rows: SpanRows, reasons: Reasons) -> None:
        """Fail (``reasons.fail``) the rows whose values this handler would refuse, by checks that
        need no state: run as an export arrives (gRPC threads), so those spans are refused there,
        counted and reported to the exporter in ``partial_success``."""
        ...

    def handle_rows(self, rows: SpanRows, out: TapOutput) -> Counter[str]: ...


class WallToMono:
    """Unix seconds -> sidecar monotonic seconds."""

    def __init__(
        self, wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic
    ) -> None:
        self._wall = wall
        self._mono = mono

    def __call__(self, unix_s: float) -> float:
        return unix_s - (self._wall() - self._mono())
