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

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from loadgen.records import Request, Result
from sidecar.contracts.span_attributes import CLIENT_REQUEST_ID, TASK

__all__ = ["ClientTracer"]

_PROPAGATOR = TraceContextTextMapPropagator()


class ClientTracer:
    """Makes request spans; ``endpoint`` is ``host:port`` of an OTLP/gRPC receiver, or ``None``."""

    def __init__(self, endpoint: str | None, service_name: str = "jouletrace-loadgen") -> None:
        self.endpoint = endpoint or None
        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if self.endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=self.endpoint, insecure=True, timeout=5)
            self._provider.add_span_processor(
                BatchSpanProcessor(exporter, max_queue_size=65536, schedule_delay_millis=500)
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
        """Flush pending spans (bounded by the exporter's timeout) and stop."""
        self._provider.force_flush(timeout_millis=5000)
        self._provider.shutdown()
