"""The client's OpenTelemetry spans: one CLIENT span per request, propagated with W3C ``traceparent``.

Each span carries ``jouletrace.task`` (and the request id, API and outcome). The
``traceparent`` header makes vLLM's ``llm_request`` span (and the diffusion
server's request span) a child of it, so a sidecar that receives both joins the
task to the request's energy by trace id: the same mechanism a production client
uses. Spans go to an OTLP/gRPC endpoint (``--otlp-endpoint``, by default the
sidecar's receiver on port 4317); with no endpoint the spans are still made (the
header still propagates) but not exported.

The provider is private to the run (never the global one), so tests and library
users are not affected.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from loadgen.records import Request, Result
from sidecar.contracts.span_attributes import CLIENT_REQUEST_ID, TASK

__all__ = ["ClientTracer", "CountingExporter"]

_PROPAGATOR = TraceContextTextMapPropagator()
# One export may wait this long, retries included (OTel's default is 10 s): on a loaded machine the
# sidecar's answer can be late, and a span not delivered is a request whose task stays "unknown".
EXPORT_TIMEOUT_S = 15.0
FLUSH_TIMEOUT_S = 30.0  # the spans still queued when the run ends get this long to go out
RESEND_TIMEOUT_S = 30.0  # then the failed exports' spans get this long to go out once more
MAX_KEPT_SPANS = 65_536  # failed spans kept to be sent again (the processor's queue size)
MAX_ERRORS = 5  # the exporter's last complaints kept for the report
_OTLP_LOGGER = "opentelemetry.exporter.otlp.proto.grpc.exporter"
T = TypeVar("T")


class CountingExporter(SpanExporter):
    """An exporter's spans counted by outcome, and its failed exports kept to be sent once more.

    ``exported`` and ``failed`` count spans; a failed export's spans are kept (up to
    :data:`MAX_KEPT_SPANS`) and :meth:`resend` offers them to the receiver again when the run
    ends and the machine is quiet (``resent``: delivered on that second try, moved from
    ``failed`` to ``exported``). The exporter's own warnings and errors (the gRPC status and
    details it logs, the only place it says them) are kept too, the last few (``errors``), so a
    task the sidecar could not join is explained, not guessed at.
    """

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.counts = {"exported": 0, "failed": 0, "resent": 0}
        self.errors: deque[str] = deque(maxlen=MAX_ERRORS)
        self._kept: list[Sequence[ReadableSpan]] = []
        self._kept_spans = 0
        self._closed = False  # set when the closing flush ran out of time: the rest is not sent
        self._lock = threading.Lock()  # export runs on the processor's thread; counts are read on ours

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        closed = self._closed
        ok = not closed and self._send(spans)
        with self._lock:
            self.counts["exported" if ok else "failed"] += len(spans)
            if not ok and not closed and self._kept_spans + len(spans) <= MAX_KEPT_SPANS:
                self._kept.append(spans)
                self._kept_spans += len(spans)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def _send(self, spans: Sequence[ReadableSpan]) -> bool:
        try:
            return self.inner.export(spans) is SpanExportResult.SUCCESS
        except Exception as err:  # the SDK would log and drop it; count it, say why
            self.note(f"{type(err).__name__}: {err}")
            return False

    def resend(self, timeout_s: float) -> None:
        """Offer the failed exports' spans once more, oldest first, until ``timeout_s`` has passed or
        one fails again (the receiver still refuses: the rest would wait an export timeout each)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            kept, self._kept, self._kept_spans = self._kept, [], 0
        for i, spans in enumerate(kept):
            if time.monotonic() >= deadline:
                self.note(f"{sum(len(s) for s in kept[i:])} failed spans not sent again: out of time")
                return
            if not self._send(spans):
                self.note(f"{sum(len(s) for s in kept[i:])} failed spans not sent again: failed again")
                return
            with self._lock:
                self.counts["failed"] -= len(spans)
                self.counts["exported"] += len(spans)
                self.counts["resent"] += len(spans)

    def close(self, reason: str) -> None:
        """Send nothing more for the processor: its later exports fail at once, counted failed and
        not kept (:meth:`resend` still sends what was kept before)."""
        self._closed = True
        self.note(reason)

    def note(self, message: str) -> None:
        """Keep one of the exporter's complaints (the last :data:`MAX_ERRORS`)."""
        with self._lock:
            self.errors.append(message[:300])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def _within(fn: Callable[[], T], timeout_s: float) -> T | None:
    """``fn()`` run in a daemon thread, waited for at most ``timeout_s``; None when it did not return
    in time (or raised). The SDK's ``force_flush`` ignores its own timeout: it exports the whole
    queue, one batch per export timeout."""
    out: list[T] = []
    thread = threading.Thread(target=lambda: out.append(fn()), name="jouletrace-span-flush", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return out[0] if out else None


class _Complaints(logging.Handler):
    """The OTLP exporter's log records (WARNING and up) handed to :meth:`CountingExporter.note`."""

    def __init__(self, exporter: CountingExporter) -> None:
        super().__init__(logging.WARNING)
        self.exporter = exporter

    def emit(self, record: logging.LogRecord) -> None:
        self.exporter.note(record.getMessage())


def _otlp(endpoint: str) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=EXPORT_TIMEOUT_S)


class ClientTracer:
    """Makes request spans; ``endpoint`` is ``host:port`` of an OTLP/gRPC receiver, or ``None``."""

    def __init__(
        self,
        endpoint: str | None,
        service_name: str = "jouletrace-loadgen",
        exporter: SpanExporter | None = None,
    ) -> None:
        """``exporter`` replaces the OTLP/gRPC one (tests); it is used only with an ``endpoint``."""
        self.endpoint = endpoint or None
        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self._exporter: CountingExporter | None = None
        self._complaints: _Complaints | None = None
        self._flushed: bool | None = None
        if self.endpoint:
            self._exporter = CountingExporter(exporter or _otlp(self.endpoint))
            self._complaints = _Complaints(self._exporter)
            logging.getLogger(_OTLP_LOGGER).addHandler(self._complaints)
            self._provider.add_span_processor(
                BatchSpanProcessor(self._exporter, max_queue_size=65536, schedule_delay_millis=500)
            )
        self._tracer = self._provider.get_tracer("jouletrace.loadgen")

    def start(self, request: Request, headers: dict[str, str]) -> Span:
        """Start the request's span and write ``traceparent`` into ``headers``."""
        attrs: dict[str, Any] = {
            TASK: request.task,
            CLIENT_REQUEST_ID: request.id,
            "gen_ai.operation.name": request.api,
            "http.request.method": "POST",
            "url.path": request.path,
        }
        model = request.body.get("model")
        if isinstance(model, str):
            attrs["gen_ai.request.model"] = model
        if request.target_output_tokens is not None:
            attrs["gen_ai.request.max_tokens"] = request.target_output_tokens
        span = self._tracer.start_span(f"loadgen {request.task}", kind=SpanKind.CLIENT, attributes=attrs)
        _PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))
        return span

    @staticmethod
    def end(span: Span, result: Result) -> None:
        """Record the outcome on the span and end it."""
        if result.status is not None:
            span.set_attribute("http.response.status_code", result.status)
        if result.response_id:
            span.set_attribute("gen_ai.response.id", result.response_id)
        span.set_attribute("gen_ai.usage.output_tokens", result.output_tokens)
        if result.prompt_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", result.prompt_tokens)
        if result.error:
            span.set_status(Status(StatusCode.ERROR, result.error[:200]))
        span.end()

    def shutdown(self) -> None:
        """Flush pending spans (at most :data:`FLUSH_TIMEOUT_S`: then the spans still queued are
        counted failed, not sent), send the failed ones once more (at most :data:`RESEND_TIMEOUT_S`
        plus the export under way) and stop: at most about FLUSH_TIMEOUT_S + RESEND_TIMEOUT_S + 2 *
        :data:`EXPORT_TIMEOUT_S` in all, however many spans are queued."""
        if self._exporter is not None:
            self._flushed = _within(self._provider.force_flush, FLUSH_TIMEOUT_S) is True
            if not self._flushed:
                self._exporter.close(f"closing flush out of time after {FLUSH_TIMEOUT_S:g} s: rest not sent")
            self._exporter.resend(RESEND_TIMEOUT_S)
        self._provider.shutdown()
        if self._complaints is not None:
            logging.getLogger(_OTLP_LOGGER).removeHandler(self._complaints)
            self._complaints = None

    def report(self) -> dict[str, Any]:
        """Where the client spans went: the endpoint; spans ``exported``, ``failed`` and ``resent``
        (delivered on the second try); whether the closing flush finished (``flushed``; ``None``
        before :meth:`shutdown` or with no endpoint); the exporter's last complaints (``errors``)."""
        exporter = self._exporter or CountingExporter(SpanExporter())
        return {"endpoint": self.endpoint or "", **exporter.snapshot(), "flushed": self._flushed,
                "errors": list(exporter.errors)}  # fmt: skip
