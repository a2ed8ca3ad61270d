"""Enriched spans: each vLLM request span, forwarded upstream with its energy once final.

The span handler hands over every ``llm_request`` span (:meth:`SpanForwarder.on_span`);
the sidecar hands over final records (:meth:`SpanForwarder.on_final`). When
both are there for a request id, the span is re-sent to an upstream OTLP/gRPC
endpoint (an OTel Collector, Tempo, Jaeger) with the same trace and span ids,
parent, times, resource and attributes, plus the ``jouletrace.energy.*``
attributes (:mod:`sidecar.contracts.span_attributes`): joules, prefill and
decode joules, joules per output token (absent without output), approximate,
source and rule, and the task when known.

Sending is the OpenTelemetry SDK's: a ``BatchSpanProcessor`` (its own thread,
batches of up to 512) in front of the ``OTLPSpanExporter`` (gRPC, retries
transient errors with backoff within ``timeout_s``). At most ``max_queue`` spans, and
:data:`_MAX_SENDING_BYTES` of their attribute text, wait to be sent; beyond that they are
dropped and counted, so a slow or absent upstream
costs the sidecar nothing but dropped (counted) spans. A span waiting for its record, and a
record waiting for its span, are kept at most :data:`_MAX_WAITING` each, and the waiting spans
at most :data:`_MAX_WAITING_BYTES` of attribute text (a span's attributes are a client's: one
export of 4 MiB may be one span); beyond either the oldest goes, counted. Counters
(``span_forward`` tap): ``forwarded``, ``failed`` (export gave up), ``dropped``,
``malformed`` (ids that are not hex), ``evicted_spans`` and ``evicted_records`` (waited
beyond the bounds above), ``dropped_at_stop`` (still queued when the stop's grace ran out: the
sidecar's stop closes the forwarder last, after its records are stored), ``task_late_sent`` (a
task named after the record was final, for a span already sent without it; a record still
waiting for its span takes the task).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from sidecar.attribution.records import RequestEnergy
from sidecar.contracts import span_attributes as attrs
from sidecar.log_limit import OncePerMinute
from sidecar.taps.spans import AttrValue, ReceivedSpan

__all__ = ["SpanForwarder", "energy_attributes", "enriched_span", "readable_bytes", "span_bytes"]

log = logging.getLogger(__name__)

_MAX_WAITING = 20_000  # spans waiting for their record, and records waiting for their span
_MAX_WAITING_BYTES = 64 * 1024 * 1024  # the waiting spans' attributes and resources, as span_bytes counts
# the spans handed to the exporter and not sent yet, as readable_bytes counts: a hung upstream holds them
_MAX_SENDING_BYTES = 32 * 1024 * 1024
_VALUE_BYTES = 16  # what span_bytes counts for a value that is not text (a number, a bool)
_SCHEDULE_DELAY_MS = 200  # how long a batch may wait to fill before it is sent
# the SDK's loggers that log each failed export attempt while the upstream is down
_SDK_LOGGERS = ("opentelemetry.exporter.otlp.proto.grpc.exporter", "opentelemetry.sdk._shared_internal")


def energy_attributes(rec: RequestEnergy) -> dict[str, AttrValue]:
    """The ``jouletrace.energy.*`` attributes of a final record (joules)."""
    out: dict[str, AttrValue] = {
        attrs.ENERGY_J: rec.energy_j,
        attrs.ENERGY_PREFILL_J: rec.phase_j.get("prefill", 0.0),
        attrs.ENERGY_DECODE_J: rec.phase_j.get("decode", 0.0),
        attrs.ENERGY_APPROXIMATE: rec.approximate,
        attrs.ENERGY_SOURCE: rec.energy_source,
        attrs.ENERGY_RULE: rec.rule,
    }
    per_unit = rec.joules_per_output_unit
    if per_unit is not None:
        out[attrs.ENERGY_J_PER_OUTPUT_TOKEN] = per_unit
    if rec.energy_low_j is not None and rec.energy_high_j is not None:
        out[attrs.ENERGY_LOW_J] = rec.energy_low_j
        out[attrs.ENERGY_HIGH_J] = rec.energy_high_j
    if rec.fit_quality:
        out[attrs.ENERGY_FIT_QUALITY] = rec.fit_quality
    if rec.task != "unknown":
        out[attrs.TASK] = rec.task
    return out


def span_bytes(span: ReceivedSpan) -> int:
    """About what a waiting span holds: its attributes' and resource's keys and text values (a list's
    items each), :data:`_VALUE_BYTES` for any other value; its ids and name."""
    ids = len(span.trace_id) + len(span.span_id) + len(span.parent_span_id)
    return ids + len(span.name) + _tables_bytes(span.attributes, span.resource)


def readable_bytes(span: ReadableSpan) -> int:
    """:func:`span_bytes` of an enriched span (what it holds until the exporter has sent it)."""
    return len(span.name) + _tables_bytes(span.attributes or {}, span.resource.attributes)


def _tables_bytes(*tables: Mapping[str, object]) -> int:
    """The keys and values of attribute tables, as :func:`span_bytes` counts them."""
    return sum(len(key) + _value_bytes(value) for table in tables for key, value in table.items())


def _value_bytes(value: object) -> int:
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple):  # nested too (an array of arrays counted 16 bytes a row)
        return sum(_value_bytes(v) for v in value)
    return _VALUE_BYTES


def _id(hex_id: str, digits: int, what: str) -> int:
    """An id as OTLP sends it (``digits`` hex digits: 16 bytes a trace, 8 a span); ``ValueError``
    otherwise (the exporter cannot encode a wider one, and its batch would fail with it)."""
    if len(hex_id) != digits:
        raise ValueError(f"{what} {hex_id[:40]!r} is not {digits} hex digits")
    return int(hex_id, 16)


def _context(trace_id: int, span_hex: str) -> SpanContext:
    return SpanContext(
        trace_id, _id(span_hex, 16, "span id"), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )


def enriched_span(span: ReceivedSpan, rec: RequestEnergy) -> ReadableSpan:
    """``span`` as the SDK's finished span, with ``rec``'s energy attributes; ``ValueError`` for bad ids."""
    trace_id = _id(span.trace_id, 32, "trace id")
    return ReadableSpan(
        name=span.name,
        context=_context(trace_id, span.span_id),
        parent=_context(trace_id, span.parent_span_id) if span.parent_span_id else None,
        resource=Resource(dict(span.resource)),
        attributes={**span.attributes, **energy_attributes(rec)},
        kind=SpanKind.SERVER,
        start_time=int(span.start_unix_s * 1e9),
        end_time=int(span.end_unix_s * 1e9),
        instrumentation_scope=InstrumentationScope(span.scope or "vllm", "jouletrace"),
    )


class _CountingExporter(SpanExporter):
    """The OTLP exporter, counting what it delivered and what it gave up on."""

    def __init__(self, inner: SpanExporter, on_result: Callable[[Sequence[ReadableSpan], bool], None]):
        self._inner = inner
        self._on_result = on_result

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:  # the SDK's processor logs it; they are not in flight any more either way
            self._on_result(spans, False)
            raise
        self._on_result(spans, result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class SpanForwarder:
    """Joins request spans with final records and exports them to ``endpoint`` (host:port)."""

    def __init__(self, endpoint: str, *, max_queue: int = 10_000, timeout_s: float = 5.0) -> None:
        self.endpoint = endpoint.removeprefix("grpc://").removeprefix("http://")
        self.timeout_s = timeout_s
        self.max_queue = max_queue
        self.counts: Counter[str] = Counter()
        self._spans: OrderedDict[str, tuple[ReceivedSpan, int]] = OrderedDict()  # with span_bytes
        self._span_bytes = 0  # of the waiting spans
        self._finals: OrderedDict[str, RequestEnergy] = OrderedDict()
        self._lock = threading.Lock()
        self._in_flight = 0  # handed to the processor, not yet exported or failed
        self._sending_bytes = 0  # their readable_bytes
        self._processor: BatchSpanProcessor | None = None

    def start(self) -> int:
        for name in _SDK_LOGGERS:  # each failed attempt is counted (failed, dropped): a line a minute
            OncePerMinute.on(logging.getLogger(name))
        exporter = OTLPSpanExporter(endpoint=self.endpoint, insecure=True, timeout=self.timeout_s)
        self._processor = BatchSpanProcessor(
            _CountingExporter(exporter, self._exported),
            max_queue_size=self.max_queue,
            schedule_delay_millis=_SCHEDULE_DELAY_MS,
            max_export_batch_size=min(512, self.max_queue),
        )
        return 0

    def stop(self, grace_s: float = 1.0) -> None:
        """Send what is queued and close the exporter, waiting at most ``grace_s`` (the SDK's own
        shutdown may wait 30 s on a hung upstream, past the stop's grace period); what is still
        queued then is dropped, counted ``dropped_at_stop``."""
        processor, self._processor = self._processor, None
        if processor is None:
            return
        closing = threading.Thread(target=processor.shutdown, name="jouletrace-forward-stop", daemon=True)
        closing.start()
        closing.join(max(grace_s, 0.0))
        if closing.is_alive():
            with self._lock:
                left = self._in_flight
                self.counts["dropped_at_stop"] += left
            log.warning("span forwarding: %d spans still queued after %.1f s at stop, dropped", left, grace_s)

    def on_span(self, request_id: str, span: ReceivedSpan) -> None:
        """A request span arrived (sidecar loop)."""
        with self._lock:
            rec = self._finals.pop(request_id, None)
            if rec is None:
                self._wait(request_id, span)
                return
        self._send(span, rec)

    def _wait(self, request_id: str, span: ReceivedSpan) -> None:
        """Keep ``span`` until its record comes, within the bounds (the oldest goes first; the lock held)."""
        size = span_bytes(span)
        old = self._spans.pop(request_id, None)  # a repeat replaces the one waiting
        self._span_bytes += size - (old[1] if old is not None else 0)
        self._spans[request_id] = (span, size)
        while len(self._spans) > _MAX_WAITING or self._span_bytes > _MAX_WAITING_BYTES:
            _, (_, gone) = self._spans.popitem(last=False)
            self._span_bytes -= gone
            self.counts["evicted_spans"] += 1

    def on_final(self, records: Sequence[RequestEnergy]) -> None:
        """Records became final (sidecar loop)."""
        for rec in records:
            with self._lock:
                waiting = self._spans.pop(rec.request_id, None)
                if waiting is None:
                    self._finals[rec.request_id] = rec
                    while len(self._finals) > _MAX_WAITING:
                        self._finals.popitem(last=False)
                        self.counts["evicted_records"] += 1
                    continue
                span, size = waiting
                self._span_bytes -= size
            self._send(span, rec)

    def on_tasks(self, tasks: dict[str, str]) -> None:
        """Tasks named after their records were final (id -> task): a record still waiting for its
        span takes its task; a span already sent keeps what it had (counted ``task_late_sent``)."""
        with self._lock:
            for request_id, task in tasks.items():
                rec = self._finals.get(request_id)
                if rec is None:
                    self.counts["task_late_sent"] += 1
                elif rec.task == "unknown":
                    self._finals[request_id] = dataclasses.replace(rec, task=task)

    def _send(self, span: ReceivedSpan, rec: RequestEnergy) -> None:
        try:
            readable = enriched_span(span, rec)
        except ValueError:
            self.counts["malformed"] += 1
            return
        processor = self._processor
        size = readable_bytes(readable)
        with self._lock:
            over = self._sending_bytes > 0 and self._sending_bytes + size > _MAX_SENDING_BYTES
            if processor is None or self._in_flight >= self.max_queue or over:
                self.counts["dropped"] += 1
                return
            self._in_flight += 1
            self._sending_bytes += size
        processor.on_end(readable)

    def _exported(self, spans: Sequence[ReadableSpan], ok: bool) -> None:
        n, size = len(spans), sum(map(readable_bytes, spans))
        with self._lock:
            self._in_flight -= n
            self._sending_bytes -= size
            self.counts["forwarded" if ok else "failed"] += n
        if not ok:
            log.debug("forwarding %d spans to %s failed", n, self.endpoint)
