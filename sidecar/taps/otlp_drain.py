"""Queued spans to their handlers, each on its own: what the OTLP receiver's ``due`` does at a tick.

A whole span (:class:`~sidecar.taps.spans.ReceivedSpan`) goes to the first handler that claims
it; its output joins only if it was handled whole. A handler that rejects it
(:class:`~sidecar.taps.validate.Rejected`) or fails costs that span only (``rejected_<reason>``,
``internal_errors``); a span no handler claims is ``ignored``. Spans taken as columns go to
their row handler as a batch (it answers per row). After the spans, each handler that has
``flush(out)`` hands over the work it makes per batch (one step-clock fit per drain).
:func:`row_handler` says which handler, if any, takes its spans as columns.

:func:`take` is a tick's share of the receiver's queue (``otlp_drain_max_spans``): what a tick
hands on is what the attribution makes requests and work rows of at once (~17 rows a vLLM
span), so the cap bounds that burst; after a stall the queue is full, and a tick that took all
of it raised the sidecar's peak RSS under a span flood (``benchmarks/memory.py``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from typing import cast

from sidecar.taps import validate as v
from sidecar.taps.span_rows import RowSpec
from sidecar.taps.spans import ReceivedSpan, RowHandler, SpanHandler, SpanRows, TapOutput

__all__ = ["drain", "row_handler", "take"]

_Item = ReceivedSpan | tuple[RowHandler, SpanRows]  # a queued span, or an export's spans as columns

log = logging.getLogger(__name__)


def take(queue: deque[_Item], queued: int, most: float) -> tuple[list[_Item], int]:
    """The oldest items of ``queue`` (holding ``queued`` spans) up to ``most`` spans, taken out of it
    (whole items: up to one export's spans more); the items and their number of spans."""
    if queued <= most:
        items = list(queue)
        queue.clear()
        return items, queued
    items, n = [], 0
    while n < most:
        item = queue.popleft()
        n += 1 if isinstance(item, ReceivedSpan) else len(item[1])
        items.append(item)
    return items, n


def drain(items: Iterable[_Item], handlers: Sequence[SpanHandler]) -> tuple[TapOutput, Counter[str]]:
    """Every item to its handler(s), then each handler's flush; the output and the outcomes counted."""
    out = TapOutput()
    outcomes: Counter[str] = Counter()
    for item in items:
        if isinstance(item, ReceivedSpan):
            _handle(item, handlers, out, outcomes)
            continue
        row_handler, rows = item
        try:  # the handler isolates each row; this is for a bug in its bulk part
            outcomes.update(row_handler.handle_rows(rows, out))
        except Exception:
            outcomes["internal_errors"] += len(rows)
            log.exception("span handler %s could not take %d spans", type(row_handler).__name__, len(rows))
    for handler in handlers:  # a handler that batches work hands it over once per drain
        flush = getattr(handler, "flush", None)
        if flush is not None:
            try:
                flush(out)
            except Exception:
                outcomes["internal_errors"] += 1
                log.exception("span handler %s could not flush", type(handler).__name__)
    return out, outcomes


def _handle(
    span: ReceivedSpan, handlers: Sequence[SpanHandler], out: TapOutput, outcomes: Counter[str]
) -> None:
    """One whole span to the first handler that claims it; its output joins only if handled whole."""
    one = TapOutput()
    try:
        claimed = any(h.handle(span, one) for h in handlers)
    except v.Rejected as err:
        v.note(outcomes, err)
        log.debug("span rejected: %s", err)
        return
    except Exception:  # a bug must not cost the other spans: count, log, go on
        outcomes["internal_errors"] += 1
        log.exception("span %s (%s) could not be handled", span.span_id, span.name)
        return
    if not claimed:
        outcomes["ignored"] += 1
    out.events += one.events
    out.infos += one.infos


def row_handler(handlers: Sequence[SpanHandler]) -> tuple[RowHandler, RowSpec] | None:
    """The handler that takes its spans as columns, and what it reads; None if there is none, or if
    a handler before it does not say by which attributes it claims spans (``claim_keys``): those
    attributes send a span to the full decode, so every handler sees what it saw before."""
    escape: list[str] = []
    for handler in handlers:
        row_spec = getattr(handler, "row_spec", None)
        if row_spec is not None:
            spec: RowSpec | None = row_spec()
            if spec is None:
                return None
            return cast(RowHandler, handler), dataclasses.replace(spec, escape=(*spec.escape, *escape))
        keys = getattr(handler, "claim_keys", None)
        if keys is None:
            return None
        escape += keys
    return None
