"""OTLP/gRPC trace receiver (port 4317): spans in, work events out.

vLLM started with ``--otlp-traces-endpoint`` and the diffusion server send their spans here.
The gRPC handler only decodes and queues (a bounded deque, thread-safe); the sidecar's tick
takes the oldest of it (at most ``max_drain_spans``: :func:`.otlp_drain.take`) on its own loop
and hands each span to the :class:`~sidecar.taps.spans.SpanHandler` s, so attribution is only
touched from one thread. A work source: ``due(now_s)`` returns what they made of them.

Columns for the spans that matter (:mod:`.span_rows`): a handler with ``row_spec()`` (the vLLM
handler: ``llm_request`` spans) gets its spans decoded straight into columns
(:class:`~sidecar.taps.spans.SpanRows`: only the attributes it reads, ~400 bytes a queued span
with its retry key, the whole decoded span was ~1,400) and checked in bulk, with the same checks
and reasons as a whole span; every other span is decoded whole
(:class:`~sidecar.taps.spans.ReceivedSpan`) and goes to each handler in turn. The fast path is
used only where it cannot change which handler claims a span: every handler before the row
handler must name the attributes it claims spans by (``claim_keys``); those spans go whole.

Faults, as an OpenTelemetry collector handles them:

* an export over ``max_message_bytes`` is refused with RESOURCE_EXHAUSTED and counted
  (``refused_too_large``; gRPC itself refuses, uncounted, anything over twice the limit, so a
  flood cannot make the sidecar buffer it), one that is not protobuf with INVALID_ARGUMENT
  (``refused_undecodable``); a span protobuf cannot read in an export it can (a string that is
  not UTF-8, in the span, its resource or scope) is refused alone (``rejected_undecodable_span``,
  in ``partial_success``), as OTel's exporters never send an export refused whole again;
* each span is checked when it arrives (:mod:`.validate`): one that ends before it starts,
  lasts over a day or is dated far from the sidecar's clock, or repeats a (trace id, span id)
  already received (an exporter's retry) is rejected and counted (``rejected_<reason>``; within
  one export the row handler's spans are checked first, so a span decoded whole with the ids and
  name of one of them, an id-less twin, is the duplicate, wherever it comes); so is
  a span the row handler's own checks refuse (``check_rows``: a vLLM span's id, token counts
  and latencies), and the export's answer reports them all in ``partial_success``;
* backpressure: an export that arrives while the queue is full, or while the process is over
  a memory or backlog limit (:mod:`.otlp_limit`, the Collector's ``memory_limiter``), is
  refused whole before it is decoded with UNAVAILABLE and a ``RetryInfo`` (OTLP's
  backpressure signal: the exporter keeps the spans and retries them), counted per export
  (``refused_queue_full``, ``refused_memory``, ``refused_backlog``), so a flood's surplus
  costs neither decoding CPU nor the memory of its spans, and loses nothing an exporter
  retries. So is an export with more spans than the queue has room for while spans are
  queued (the next tick makes room: sent again, it is taken whole), looked at once its spans
  are counted, before they are decoded, and checked again as they are queued under one lock,
  so two exports cannot both take the last room (:mod:`.otlp_queue`, which also checks each
  span); only one bigger than the whole queue, arriving at an empty queue, keeps what fits and
  drops the rest (``dropped``, reason ``queue_full``; so does :meth:`receive` called directly):
  its response carries ``partial_success`` with the number refused and why;
* each span is handed to the handlers on its own (:mod:`.otlp_drain`): a handler that rejects
  it (:class:`~sidecar.taps.validate.Rejected`, e.g. a NaN token count) or fails costs that
  span only (``rejected_<reason>``, ``internal_errors``); spans no handler claims are counted
  (``ignored``).
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from sidecar.attribution.events import StepBatch, WorkEvent, WorkRows
from sidecar.attribution.records import TapReport
from sidecar.attribution.task_labels import Info
from sidecar.recent_ids_sorted import SortedRecentIds
from sidecar.taps import validate as v
from sidecar.taps.otlp_decode import decode_export, decode_request, respond
from sidecar.taps.otlp_drain import drain, row_handler, take
from sidecar.taps.otlp_limit import ExportLimiter, status_details
from sidecar.taps.otlp_queue import NoRoom, Queued, SpanQueue
from sidecar.taps.span_rows import LeanExport, RowSpec, decode_rows, span_count
from sidecar.taps.spans import RowHandler, SpanHandler, SpanRows
from sidecar.taps.tap import merge_reports

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "OtlpReceiver", "decode_request"]

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # gRPC's own default
_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
DEFAULT_MAX_QUEUED_SPANS = 10_000  # spans between ticks (~400 B each queued): otlp_max_queued_spans
_IDLE_CLOSE_MS = 300_000  # an exporter's connection silent this long is closed (it reconnects)
DEFAULT_MAX_REMEMBERED_SPANS = 20_000  # (trace id, span id) pairs kept to spot retries: otlp_dedupe_spans


class OtlpReceiver(SpanQueue):
    """A gRPC OTLP trace endpoint feeding span handlers."""

    knob = "otlp_port"  # named when the port cannot be bound

    def __init__(
        self,
        handlers: Sequence[SpanHandler],
        *,
        host: str = "127.0.0.1",
        port: int = 4317,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_queued_spans: int = DEFAULT_MAX_QUEUED_SPANS,
        max_remembered_spans: int = DEFAULT_MAX_REMEMBERED_SPANS,
        max_drain_spans: float = math.inf,
        wall: Callable[[], float] = time.time,
        limits: v.Limits = v.LIMITS,
        limiter: ExportLimiter | None = None,
    ) -> None:
        self.handlers = list(handlers)
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.counts: Counter[str] = Counter()
        self._queue: deque[Queued] = deque()
        self._cut: list[Queued] | None = None  # taken at the tick's start (cut), handed on by due
        self._queued = 0  # spans in the queue
        self._max_queued = max_queued_spans
        self._max_drain = max_drain_spans  # spans handed on per tick (otlp_drain_max_spans)
        self._stopped = False  # once stopped, a tick takes all that is queued (nothing more comes)
        self._wall = wall  # Unix seconds now, to date-check spans
        self._limits = limits
        self.limiter = limiter if limiter is not None else ExportLimiter()  # default: no limit
        # span_key of recent spans (ids and name)
        self._seen: SortedRecentIds[bytes | str] = SortedRecentIds(max_remembered_spans)
        self._lock = threading.RLock()  # a whole export is checked for room and queued in one hold
        self._server: grpc.Server | None = None

    received = property(lambda self: self.counts["received"])
    ignored = property(lambda self: self.counts["ignored"])
    dropped = property(lambda self: self.counts["dropped"])

    def start(self) -> int:
        """Start serving; returns the bound port (``port=0`` picks a free one)."""
        options = [  # up to twice the limit reaches export() to be counted; gRPC refuses the rest
            ("grpc.max_receive_message_length", 2 * self.max_message_bytes),
            ("grpc.so_reuseport", 0),
            ("grpc.max_connection_idle_ms", _IDLE_CLOSE_MS),  # a held, silent connection is a descriptor
        ]
        socket.getaddrinfo(self.host, self.port)  # a name that does not resolve: its own error, not "in use"
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
        export = grpc.unary_unary_rpc_method_handler(
            self.export, response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, {"Export": export}),))
        try:
            bound: int = server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError:  # grpcio >= 1.6x raises instead of returning 0
            bound = 0
        if bound == 0:
            raise OSError(
                errno.EADDRINUSE, f"cannot bind the OTLP receiver to {self.host}:{self.port} (in use?)"
            )
        server.start()
        self._server, self._stopped = server, False  # started again: the drain cap holds again
        self.port = bound
        log.info("OTLP/gRPC trace receiver on %s:%d", self.host, bound)
        return bound

    def stop(self, grace_s: float = 1.0) -> None:
        self._stopped = True
        if self._server is not None:
            self._server.stop(grace_s).wait()
            self._server = None

    def export(self, payload: bytes, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        """The gRPC method: size check, backpressure, decode, accept (on gRPC worker threads)."""
        if len(payload) > self.max_message_bytes:
            self._count("refused_too_large")
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"export of {len(payload)} bytes is over the limit of {self.max_message_bytes} "
                "(otlp_max_message_bytes)",
            )
        refusal = self._full() or self.limiter.refusal()
        if refusal is not None:  # retryable: the exporter keeps the spans and sends them again
            self._count(f"refused_{refusal.reason}")
            context.set_trailing_metadata(status_details(refusal.message, self.limiter.retry_delay_s))
            context.abort(grpc.StatusCode.UNAVAILABLE, refusal.message)
        try:  # protobuf's DecodeError (untyped): not an export's wire format
            refused = self.receive(payload, whole=True)
        except NoRoom as no_room:  # retryable: sent again after a tick, it is taken whole
            self._count("refused_queue_full")
            context.set_trailing_metadata(status_details(no_room.message, self.limiter.retry_delay_s))
            context.abort(grpc.StatusCode.UNAVAILABLE, no_room.message)
        except Exception as err:
            self._count("refused_undecodable")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not an OTLP trace export: {err}")
        return respond(refused)

    def receive(self, payload: bytes, *, whole: bool = False) -> Counter[str]:
        """Decode an export and accept its spans (the spans a row handler reads as columns); returns
        the refused, by reason. Raises if the export cannot be decoded (nothing of it is kept).
        ``whole`` (the gRPC method): an export with more spans than the queue's room while spans
        are queued, or one that finds the queue full (filled by another export since the method
        looked), raises :class:`NoRoom`, nothing of it kept."""
        refused_whole = self._refuse_if_full(payload, whole)
        if refused_whole:
            return refused_whole
        found = row_handler(self.handlers)
        parsed = LeanExport.FromString(payload)  # the wire format; every string read as bytes
        n = span_count(parsed)
        with self._lock:  # a first look: an export refused for room costs its count, not its decode
            self._room_for(n, whole)
        columns: list[tuple[SpanRows, RowHandler, str]] = []  # the row handler's spans, if it has any
        read = None if found is None else self._read_rows(payload, found[1], parsed)
        if read is None:  # every span the exact way
            spans, undecodable = decode_export(payload, parsed)
        else:
            rows, generic = read
            columns = [(rows, found[0], found[1].name)] if found is not None and len(rows) else []
            spans, undecodable = decode_export(payload, parsed, set(generic)) if generic else ([], 0)
        with self._lock:  # the room may have gone meanwhile: checked again as the spans are queued
            self._room_for(n, whole)
            refused: Counter[str] = Counter()
            for rows, handler, name in columns:  # first: a whole span with a row's ids and name is its twin
                refused += self.accept_rows(rows, handler, name)
            refused += self.accept(spans)
            if undecodable:  # a span protobuf cannot read (a string not UTF-8): it alone is refused
                self.counts["received"] += undecodable
                self.counts["rejected_undecodable_span"] += undecodable
                refused["undecodable_span"] += undecodable
        return refused

    def _read_rows(self, payload: bytes, spec: RowSpec, parsed: Any) -> tuple[SpanRows, list[int]] | None:
        """The row handler's spans as columns and the others' positions; None if the column reader
        raises (a bug: counted ``internal_errors`` and logged), and the export is read the exact
        way, every span on its own: a fault in the fast reader must not cost an export its spans."""
        try:
            return decode_rows(payload, spec, parsed)
        except Exception:
            self._count("internal_errors")
            log.exception("an export's spans could not be read as columns; read one by one instead")
            return None

    def cut(self) -> None:
        """Mark the tick's start (:class:`~sidecar.taps.tap.Cuts`): its :meth:`due` hands on only the
        spans queued by now. vLLM's span of a request is sent after the hook's and the plugin's first
        word of it, so every claim a span taken here could meet is drained before it is handled;
        a span that arrives while the tick runs waits for the next one."""
        taken = self._take()
        with self._lock:  # the tick's thread cuts and drains; a stop's drain may come from another
            self._cut = (self._cut or []) + taken

    def due(self, now_s: float) -> tuple[list[WorkEvent | StepBatch | WorkRows], list[Info]]:
        """Hand the queued spans (those of the tick's :meth:`cut` if it made one) to the handlers
        (:mod:`.otlp_drain`), the oldest first and at most ``max_drain_spans`` a tick (whole exports:
        up to one export's spans more), all of them once stopped; return what they made."""
        with self._lock:
            items, self._cut = self._cut, None
        if items is None or self._stopped:
            items = (items or []) + self._take()
        out, outcomes = drain(items, self.handlers)
        if outcomes:
            with self._lock:
                self.counts.update(outcomes)
        return out.events, out.infos

    def _take(self) -> list[Queued]:
        with self._lock:
            items, n = take(self._queue, self._queued, math.inf if self._stopped else self._max_drain)
            self._queued -= n
            return items

    def hold_s(self, now_s: float) -> float | None:
        """The earliest time a handler still waits for work of (a diffusion call begun, not ended):
        no tick after it is sealed yet; None: none waits."""
        holds = [hold(now_s) for h in self.handlers if (hold := getattr(h, "hold_s", None)) is not None]
        return min((t for t in holds if t is not None), default=None)

    def stats(self) -> TapReport:
        """Spans received, refused, rejected (by reason), dropped, ignored; plus each handler's counters."""
        with self._lock:  # received, ignored and dropped always (0 until one happens)
            counts = {"received": 0, "ignored": 0, "dropped": 0, **self.counts}
        own = TapReport(events={("otlp", k): n for k, n in counts.items()})
        return merge_reports([own, *(h.stats() for h in self.handlers)])
