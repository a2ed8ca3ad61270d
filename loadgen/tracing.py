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

import threading
from collections.abc import Sequence
from typing import Any

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


class CountingExporter(SpanExporter):
    """An exporter's spans counted by outcome (``exported``, ``failed``): the run reports them, so a
    task the sidecar could not join is explained, not guessed at."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.counts = {"exported": 0, "failed": 0}
        self._lock = threading.Lock()  # export runs on the processor's thread; counts are read on ours

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # the SDK would log and drop it; count it first
            result = SpanExportResult.FAILURE
        with self._lock:
            self.counts["exported" if result is SpanExportResult.SUCCESS else "failed"] += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


class ClientTracer:
    """Makes request spans; ``endpoint`` is ``host:port`` of an OTLP/gRPC receiver, or ``None``."""

    def __init__(self, endpoint: str | None, service_name: str = "jouletrace-loadgen") -> None:
        self.endpoint = endpoint or None
        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self._exporter: CountingExporter | None = None
        self._flushed: bool | None = None
        if self.endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            otlp = OTLPSpanExporter(endpoint=self.endpoint, insecure=True, timeout=EXPORT_TIMEOUT_S)
            self._exporter = CountingExporter(otlp)
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
        """Flush pending spans (at most :data:`FLUSH_TIMEOUT_S`) and stop."""
        if self._exporter is not None:
            self._flushed = self._provider.force_flush(timeout_millis=int(FLUSH_TIMEOUT_S * 1000))
        self._provider.shutdown()

    def report(self) -> dict[str, Any]:
        """Where the client spans went: the endpoint, spans ``exported`` and ``failed``, and whether
        the closing flush finished (``flushed``; ``None`` before :meth:`shutdown` or with no endpoint)."""
        counts = self._exporter.snapshot() if self._exporter is not None else {"exported": 0, "failed": 0}
        return {"endpoint": self.endpoint or "", **counts, "flushed": self._flushed}
