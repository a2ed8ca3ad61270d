"""The OTLP receiver's span queue: room for an export, each span checked, queued or refused.

:class:`SpanQueue` is the part of :class:`~sidecar.taps.otlp.OtlpReceiver` that takes decoded
spans in (the receiver sets these attributes; gRPC worker threads call it, the tick's thread
drains the queue). A span is checked once (:mod:`.validate`: times; a retried (trace id, span
id, name); a handler's own checks that need no state, its ``check_span``); the queue is bounded
by ``otlp_max_queued_spans`` between two ticks. An export with more spans than the queue's room
while spans wait in it is refused whole (:class:`NoRoom`; the gRPC method answers UNAVAILABLE,
retryable): the room is looked at once the export's spans are counted (a refused one is not
decoded) and checked again as they are queued, in one hold of the lock, so two exports cannot
both take the last room; spans beyond the bound of one taken in part (an export bigger than the
whole queue, or :meth:`accept` called directly) are dropped and counted (``dropped``, reason
``queue_full``).
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable

import numpy as np

from sidecar.recent_ids_sorted import ADDED, KNOWN, LEFT_OUT, SortedRecentIds
from sidecar.taps import validate as v
from sidecar.taps.otlp_decode import row_key, span_key
from sidecar.taps.otlp_limit import Refusal
from sidecar.taps.span_rows import count_spans
from sidecar.taps.spans import ReceivedSpan, RowHandler, SpanHandler, SpanRows

__all__ = ["NoRoom", "Queued", "SpanQueue"]

Queued = ReceivedSpan | tuple[RowHandler, SpanRows]  # one span whole, or an export's spans as columns


class NoRoom(Exception):
    """An export that does not fit in the span queue's room now (refused whole, retryably)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SpanQueue:
    """Checks and queues decoded spans; the receiver sets these attributes."""

    counts: Counter[str]
    _queue: deque[Queued]
    _queued: int  # spans in the queue
    _max_queued: int
    _wall: Callable[[], float]
    _limits: v.Limits
    _seen: SortedRecentIds[bytes | str]
    _lock: threading.RLock
    handlers: list[SpanHandler]

    def _room_for(self, n: int, whole: bool) -> None:
        """With ``whole``: raise :class:`NoRoom` if ``n`` spans do not fit while spans are queued
        (the caller holds the lock; an export over the whole queue is taken in part at an empty one)."""
        room = self._max_queued - self._queued
        if whole and n > room and self._queued > 0:
            raise NoRoom(
                f"jouletrace's span queue has room for {room} of this export's {n} spans now "
                f"(otlp_max_queued_spans {self._max_queued} between two ticks); retry later"
            )

    def _has_room(self) -> bool:
        with self._lock:
            return self._queued < self._max_queued

    def _full(self) -> Refusal | None:
        """Backpressure when the queue is full: the export is refused whole, retryably (not decoded)."""
        return None if self._has_room() else Refusal("queue_full", self._full_message())

    def _full_message(self) -> str:
        return (
            f"jouletrace's span queue is full ({self._max_queued} spans between two ticks: "
            "otlp_max_queued_spans); retry later"
        )

    def _refuse_if_full(self, payload: bytes, whole: bool) -> Counter[str]:
        """A full queue refuses the export whole, before its spans are decoded (a flood's refused
        spans cost a count, not their objects): with ``whole`` (the gRPC method, which looked at the
        room a moment earlier: another export may have taken it since) by raising :class:`NoRoom`,
        retryably; otherwise as ``queue_full`` for each span. Empty if there is room."""
        if self._has_room():
            return Counter()
        if whole:
            raise NoRoom(self._full_message())
        n = count_spans(payload)  # raises on an undecodable export, as the full decode would
        with self._lock:
            self.counts["received"] += n
            self.counts["dropped"] += n
        return Counter({"queue_full": n}) if n else Counter()

    def accept(self, spans: list[ReceivedSpan]) -> Counter[str]:
        """Check and queue decoded spans (gRPC worker threads, or tests); returns the refused, by reason."""
        refused: Counter[str] = Counter()
        if not spans:
            return refused
        now_s = self._wall()
        checks = [c for h in self.handlers if (c := getattr(h, "check_span", None)) is not None]
        with self._lock:
            self.counts["received"] += len(spans)
            for span in spans:
                try:
                    key = self._check(span, now_s, checks)
                except v.Rejected as err:
                    v.note(self.counts, err)
                    refused[err.reason] += 1
                    continue
                if self._queued >= self._max_queued:  # not remembered: the exporter's retry is welcome
                    self.counts["dropped"] += 1
                    refused["queue_full"] += 1
                    continue
                self._queue.append(span)
                self._queued += 1
                if key is not None:
                    self._seen.add(key)  # an exporter's retry of it is refused (the oldest forgotten first)
        return refused

    def accept_rows(self, rows: SpanRows, handler: RowHandler, name: str) -> Counter[str]:
        """:meth:`accept` for spans decoded as columns, all named ``name``: the same checks, in the
        same order, in bulk."""
        refused: Counter[str] = Counter()
        reasons = v.span_times(rows.start_unix_s, rows.end_unix_s, self._wall(), self._limits)
        wide = [len(t) > 16 or len(s) > 8 for t, s in zip(rows.trace_ids, rows.span_ids, strict=True)]
        reasons.fail(np.array(wide, dtype=bool), "bad_id")
        handler.check_rows(rows, reasons)  # its values too: a span it would refuse is refused now
        with self._lock:
            self.counts["received"] += len(rows)
            for reason, n in reasons.counts().items():
                self.counts[f"rejected_{reason}"] += n
                refused[reason] += n
            passed = reasons.passed()
            name_b, tids, sids = name.encode("utf-8", "surrogatepass"), rows.trace_ids, rows.span_ids
            keys = [row_key(tids[i], sids[i], name_b) for i in passed.tolist()]
            said = self._said(keys, self._max_queued - self._queued)
            for outcome, reason, code in (
                ("rejected_duplicate", "duplicate", KNOWN),
                ("dropped", "queue_full", LEFT_OUT),
            ):
                n = int(np.count_nonzero(said == code))
                if n:
                    self.counts[outcome] += n
                    refused[reason] += n
            keep = passed[said == ADDED].tolist()
            if keep:
                self._queue.append((handler, rows if len(keep) == len(rows) else rows.take(keep)))
                self._queued += len(keep)
        return refused

    def _said(self, keys: list[bytes | str | None], room: int) -> np.ndarray:
        """As one look-up and add a span each would: a new span is kept (and remembered) while there
        is room; a retry is a duplicate (``KNOWN``); a new span beyond the room is dropped, not
        remembered (``LEFT_OUT``: the exporter's retry is welcome). A span with invalid ids (key
        None) is new, kept while room is left after the others, never remembered."""
        named = [key for key in keys if key is not None]
        if len(named) == len(keys):
            return self._seen.add_many(named, most_new=room)
        invalid = np.array([key is None for key in keys], dtype=bool)
        said = np.full(len(keys), ADDED, dtype=np.int8)
        said[~invalid] = self._seen.add_many(named, most_new=room)
        left = max(room - int(np.count_nonzero(said[~invalid] == ADDED)), 0)
        said[np.flatnonzero(invalid)[left:]] = LEFT_OUT
        return said

    def _check(
        self, span: ReceivedSpan, now_s: float, checks: list[Callable[[ReceivedSpan], None]]
    ) -> bytes | str | None:
        """The span's retry-check key (None: its ids are invalid), once its times pass, the handlers'
        ``checks`` (their ``check_span``: checks that need no state, thread-safe) pass and it is not
        a retry."""
        if len(span.trace_id) > 32 or len(span.span_id) > 16:  # hex: wider than OTLP's 16 and 8 bytes
            raise v.Rejected("bad_id", f"span {span.span_id[:32]!r}: ids wider than OTLP's 16 and 8 bytes")
        v.unix_s(span.start_unix_s, "span start", now_s, self._limits)
        v.interval_s(span.start_unix_s, span.end_unix_s, f"span {span.name!r}", self._limits)
        for check in checks:
            check(span)
        key = span_key(span.trace_id, span.span_id, span.name)
        if key is not None and key in self._seen:
            raise v.Rejected("duplicate", f"span {span.span_id} of trace {span.trace_id} received twice")
        return key

    def _count(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self.counts[outcome] += n
