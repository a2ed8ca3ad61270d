"""vLLM's ``llm_request`` spans -> request infos, and phase-level work when the plugin is absent.

vLLM (``--otlp-traces-endpoint``) sends one ``llm_request`` span per finished
request: start = arrival; attributes from ``vllm/tracing/utils.py``
(:data:`SPAN_ATTRIBUTES`). From it this handler makes

* a :class:`RequestInfo`: model, prompt/completion tokens, start/end on the
  sidecar clock, and the task from a client span of the same trace (a span
  with ``jouletrace.task``, e.g. the load generator's), joined by trace id in
  either arrival order, or named by request id (:mod:`.vllm_span_tasks`);
* work rows, unless the plugin already supplied this request's work: prefill over
  ``[end - decode - prefill, end - decode]`` (prompt tokens, one step) and decode over
  ``[end - decode, end]`` (completion tokens - 1, one step a token, one row cut at each tick
  by the engine's step clock), each with its attention work (query-key pairs), out of
  :meth:`VllmSpanHandler.flush` once the clock is fitted to the drain's decode windows.

**No double counting.** A request's work comes from the plugin (per iteration:
better) if it claimed it (``claims(request_id)``), else from its span; the
plugin's datagram comes before the span and is drained first in each tick.
Nor from a span of a request that was in flight when the scheduler hook began
to be heard (``adopted_before()``: a sidecar started or restarted while vLLM
ran): the hook had no ``new`` row for it and took its steps since under
``unknown-<pid>-<idx>``; the span adds its info only (counted
``work_adopted_by_hook``), and its record, without work, says its energy is
unknown (:mod:`sidecar.attribution.lifecycle`).

Every value read is checked (:mod:`.validate`) before anything changes: an id
that is not a printable string, a token count that is not a whole number in
range, a latency that is negative, NaN or over a day, or a request id already
handled (a duplicate span) raises :class:`~sidecar.taps.validate.Rejected`, so
the receiver drops that span only and counts why.

Request ids are normalized and the span's attributes named in :mod:`.vllm_span_format`;
a batch's ids are checked in :mod:`.vllm_span_ids`. Units: seconds, tokens.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from sidecar import knobs
from sidecar.attribution.events import RequestInfo
from sidecar.attribution.records import TapReport
from sidecar.recent_ids_sorted import SortedRecentIds
from sidecar.taps import validate as v
from sidecar.taps.span_attributes import SpanAttributes
from sidecar.taps.span_rows import RowSpec
from sidecar.taps.span_work import phase_events, phase_rows
from sidecar.taps.spans import ReceivedSpan, SpanRows, TapOutput
from sidecar.taps.step_clock import StepClock
from sidecar.taps.vllm_span_format import (
    ID_KEY,
    ROW_SPEC,
    SPAN_ATTRIBUTES,
    SPAN_NAME,
    named_id,
    normalize_request_id,
    one_row,
    operation_of,
)
from sidecar.taps.vllm_span_ids import checked_rows
from sidecar.taps.vllm_span_tasks import TASK_ATTRIBUTE, TaskJoins

__all__ = [
    "END_AHEAD_S",
    "SPAN_ATTRIBUTES",
    "SPAN_NAME",
    "TASK_ATTRIBUTE",
    "TASK_WAIT_S",
    "VllmSpanHandler",
    "normalize_request_id",
    "phase_events",
]

_MAX_HANDLED = 50_000  # request ids remembered, to refuse a duplicate span
# How long a request span without a task waits for its trace's client span (s), which comes in the
# client's next export (OTel's batch delay: 5 s by default); then the record keeps task "unknown".
TASK_WAIT_S: float = knobs.default("vllm_task_wait_s")
# A request span is sent once the request has ended: one that ends later than this after it was
# handled (s) is refused as a time that cannot be (a one-day decode ending tomorrow made every later
# drain's step-clock fit span a day of bins). The sidecar and vLLM share the node's clock; the slack
# is the step clock's horizon and the attribution's max_future_s default, not the receiver's day.
END_AHEAD_S = v.LIMITS.max_end_ahead_s  # 300 s (diffusion spans too: validate.ended)
log = logging.getLogger(__name__)


class VllmSpanHandler:
    """A :class:`~sidecar.taps.spans.SpanHandler` for vLLM's ``llm_request`` spans and client spans."""

    def __init__(
        self,
        to_mono: Callable[[float], float],
        *,
        model: Callable[[], str] = lambda: "unknown",
        claims: Callable[[str], bool] = lambda request_id: False,
        adopted_before: Callable[[], float] = lambda: -math.inf,
        on_span: Callable[[str, ReceivedSpan], None] | None = None,
        task_wait_s: float = TASK_WAIT_S,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.to_mono = to_mono
        self.tasks = TaskJoins(task_wait_s, monotonic)
        self._wall = wall  # Unix s now: a request span ending well after it is refused
        self.model = model
        self.claims = claims
        self.adopted_before = adopted_before  # the hook's: see VllmSpanHandler._requests
        self.on_span = on_span
        self.clock = StepClock()  # the engine's step rate, from every span's decode window
        self._handled: SortedRecentIds[str] = SortedRecentIds(_MAX_HANDLED)  # ids seen: a repeat is refused
        # spans' work until flush(): per batch, request ids and their end, prompt, completion, prefill, decode
        self._work: list[
            tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
        ] = []
        self.requests = 0  # llm_request spans handled
        self.work_from_spans = 0  # of which the span supplied the work
        self.work_adopted = 0  # of which the hook took the work under another id (in flight before it)

    def handle(self, span: ReceivedSpan, out: TapOutput) -> bool:
        if span.name == SPAN_NAME and ID_KEY in span.attributes:
            counts = self._take(one_row(span), [span.trace_id], [span], out)
            for outcome in counts:  # one row: at most one outcome
                if outcome.startswith("rejected_"):
                    raise v.Rejected(outcome.removeprefix("rejected_"), f"llm_request span {span.span_id}")
                raise RuntimeError(f"llm_request span {span.span_id} could not be handled (logged)")
            return True
        if TASK_ATTRIBUTE in span.attributes:
            self.tasks.client_span(span, out)
            return True
        return False

    def row_spec(self) -> RowSpec | None:
        """The spans this handler takes as columns; None while it forwards whole spans (``on_span``)."""
        return ROW_SPEC if self.on_span is None else None

    def check_rows(self, rows: SpanRows, reasons: v.Reasons) -> None:
        """The checks of :meth:`_take` that need no state, as an export arrives: the id, the token
        counts, the latencies and an end after now (a span failing them is refused then, in
        ``partial_success``)."""
        bad: dict[str, list[int]] = {}
        for i, name in enumerate(map(named_id, rows.ids)):
            if isinstance(name, v.Rejected):  # a bug's exception is counted when the tick takes the span
                bad.setdefault(name.reason, []).append(i)
        for reason, at in bad.items():  # one mask a reason: an export of bad ids costs linear time
            mask = np.zeros(len(rows), dtype=bool)
            mask[at] = True
            reasons.fail(mask, reason)
        self._numbers(rows, reasons)

    def _numbers(self, rows: SpanRows, reasons: v.Reasons) -> tuple[np.ndarray, ...]:
        """Each row's prompt and completion tokens, prefill and decode seconds and end (Unix s: start +
        e2e when given), checked in that order (ROW_SPEC's columns); a failed row is marked in
        ``reasons`` (a number that fails reads as 0); an end well after now is a ``bad_time``. Shared by
        the check on arrival (:meth:`check_rows`) and :meth:`_take`."""
        prompt, completion = (v.token_counts(rows.values[:, j], rows.kinds[:, j], reasons) for j in (0, 1))
        e2e_s, prefill_s, decode_s = (
            v.durations_s(rows.values[:, j], rows.kinds[:, j], reasons) for j in (2, 3, 4)
        )
        end_unix_s = np.where(e2e_s > 0, rows.start_unix_s + e2e_s, rows.end_unix_s)
        reasons.fail(end_unix_s > self._wall() + END_AHEAD_S, "bad_time")  # a span comes after its end
        return prompt, completion, prefill_s, decode_s, end_unix_s

    def handle_rows(self, rows: SpanRows, out: TapOutput) -> Counter[str]:
        """``llm_request`` spans as columns (:data:`ROW_SPEC`); returns the rejected, by outcome."""
        return self._take(rows, rows.trace_ids, None, out)

    def stats(self) -> TapReport:
        """``llm_request`` spans handled, those that supplied the work, client tasks joined."""
        counts = {"requests": self.requests, "work_from_spans": self.work_from_spans, **self.tasks.counts()}
        if self.work_adopted:
            counts["work_adopted_by_hook"] = self.work_adopted
        return TapReport(events={("vllm_spans", k): n for k, n in counts.items()})

    def _take(
        self, rows: SpanRows, traces: Sequence[bytes | str], spans: list[ReceivedSpan] | None, out: TapOutput
    ) -> Counter[str]:
        """Check every row (numbers in bulk, ids in :mod:`.vllm_span_ids`), each refused for the first
        check it fails, in the order a span was always checked: id, duplicate, prompt, completion,
        e2e, prefill, decode; infos now, work at :meth:`flush`."""
        reasons = v.Reasons(len(rows))
        prompt, completion, prefill_s, decode_s, end_unix_s = self._numbers(rows, reasons)
        shift_s = self.to_mono(0.0)  # Unix -> sidecar clock: an offset (read once for the batch)
        start_s = rows.start_unix_s + shift_s
        end_s = end_unix_s + shift_s
        counts: Counter[str] = Counter()
        checked = checked_rows(rows.ids, self._handled, reasons.code.tolist(), counts)
        self._handled.add_many([request_id for _, _, request_id in checked])  # the oldest forgotten
        at = [i for i, _, _ in checked]
        times = zip(start_s[at].tolist(), end_s[at].tolist(), strict=True)
        tokens = zip(
            prompt[at].astype(np.int64).tolist(), completion[at].astype(np.int64).tolist(), strict=True
        )
        work, ids = self._requests(checked, times, tokens, traces, spans, out, counts)
        if work:
            keep = np.asarray(work, dtype=np.int64)
            self._work.append(
                (tuple(ids), end_s[keep], prompt[keep], completion[keep], prefill_s[keep], decode_s[keep])
            )
        return counts

    def _requests(
        self,
        checked: list[tuple[int, str, str]],
        times: Iterable[tuple[float, float]],
        tokens: Iterable[tuple[int, int]],
        traces: Sequence[bytes | str],
        spans: list[ReceivedSpan] | None,
        out: TapOutput,
        counts: Counter[str],
    ) -> tuple[list[int], list[str]]:
        """Each checked request's info out now; returns the rows whose work is the spans' to give, and
        their ids. A request without a task waits for a client span, from now (one time a batch)."""
        model, kept_s, adopted_s = self.model(), self.tasks.expire(), self.adopted_before()
        claims, on_span, infos = self.claims, self.on_span, out.infos
        tasks = self._tasks([traces[i] for i, _, _ in checked], [rid for _, _, rid in checked], kept_s)
        work: list[int] = []
        ids: list[str] = []
        for (i, raw_id, request_id), (t0, t1), (p, c), task in zip(
            checked, times, tokens, tasks, strict=True
        ):
            try:
                trace = traces[i]  # the span's bytes (held by the record's attributes) or hex text
                attributes = SpanAttributes(raw_id, request_id, trace)
                # positional (half the cost of keywords, made once per span): RequestInfo's field order
                infos.append(
                    RequestInfo(
                        request_id, model, operation_of(raw_id), task, t0, t1, p, c, 0.0, "token", attributes
                    )
                )
                self.requests += 1
                if on_span is not None and spans is not None:
                    on_span(request_id, spans[i])
                if claims(request_id):  # the plugin's or the hook's work: per iteration, better
                    continue
                if t0 < adopted_s:  # in flight when the hook began: its steps were taken as
                    self.work_adopted += 1  # unknown-<pid>-<idx>; its record: energy unknown
                    continue
            except Exception:  # a bug must not cost the other spans: count, log, go on
                counts["internal_errors"] += 1
                log.exception("llm_request span for %r could not be handled", request_id)
                continue
            self.work_from_spans += 1
            work.append(i)
            ids.append(request_id)
        return work, ids

    def _tasks(self, traces: list[bytes | str], request_ids: list[str], handled_s: float) -> list[str]:
        """The task of each request span by its trace (``"unknown"`` for those that wait for one);
        all ``"unknown"`` if the joins fail (a bug, logged: the requests are not lost for it)."""
        try:
            hexes = [t if isinstance(t, str) else t.hex() for t in traces]
            return self.tasks.task_of_many(hexes, request_ids, handled_s)
        except Exception:
            log.exception("task joins of %d llm_request spans failed; their task stays unknown", len(traces))
            return ["unknown"] * len(traces)

    def flush(self, out: TapOutput) -> None:
        """The work of the spans handled since the last flush, its decode following a step clock fitted
        once to all their windows (the receiver calls this after each drain; one fit per drain, not per
        span); sealing cuts it at each tick by the clock (:mod:`sidecar.attribution.step_curve`)."""
        self.tasks.expire()
        chunks, self._work = self._work, []
        if not chunks:
            self.clock.fit()
            return
        ids = tuple(rid for chunk in chunks for rid in chunk[0])
        end_s, prompt, completion, prefill_s, decode_s = (
            np.concatenate([chunk[j] for chunk in chunks]) for j in range(1, 6)
        )
        decoding = completion > 1
        first_token_s = (end_s - np.maximum(decode_s, 0.0))[decoding]
        self.clock.observe_many(first_token_s, end_s[decoding], completion[decoding] - 1)
        self.clock.fit()
        out.events.append(phase_rows(ids, end_s, prompt, completion, prefill_s, decode_s, self.clock))
