"""Batch and request spans, sent to the sidecar over OTLP/gRPC (names: sidecar.contracts.span_attributes).

A batch span covers exactly one pipeline call (start/end in Unix ns taken on
the worker thread around the call), announced by a batch-start span of no
duration as the call begins; a request span covers arrival to
response, is a child of the client's ``traceparent`` when one came in, and
links to its batch span. Spans leave through a ``BatchSpanProcessor`` with a
short export delay (``schedule_delay_ms``) so they reach the sidecar well
within its ``settle_s``. With no endpoint, spans are made and dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from servers.diffusion.batcher import Batch, Job
from sidecar.contracts import span_attributes as attrs

__all__ = ["Tracing"]

_OPERATION = {"image": "image_generation", "video": "video_generation"}


class Tracing:
    """Makes the server's spans; ``endpoint`` is the sidecar's OTLP/gRPC address (or None)."""

    def __init__(
        self,
        endpoint: str | None,
        *,
        service_name: str = "jouletrace-diffusion",
        schedule_delay_ms: int = 200,
    ) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            insecure = not endpoint.startswith("https://")
            exporter = OTLPSpanExporter(endpoint=endpoint, insecure=insecure)
            self.provider.add_span_processor(
                BatchSpanProcessor(
                    exporter, schedule_delay_millis=schedule_delay_ms, max_export_batch_size=512
                )
            )
        self.tracer = self.provider.get_tracer("jouletrace.diffusion")
        self._batch_contexts: dict[str, trace.SpanContext] = {}

    @staticmethod
    def parent(headers: Mapping[str, str]) -> Context:
        """The client's trace context from ``traceparent`` (empty context without one)."""
        return propagate.extract(dict(headers))

    def batch_start_span(self, batch: Batch) -> None:
        """A span of no duration as a pipeline call begins: the sidecar waits for the call's batch span
        before it seals time after its start (a call longer than its ``settle_s`` would else have its
        work clipped), at most ``diffusion_max_batch_s``."""
        shape = batch.shape
        span = self.tracer.start_span(
            f"{_OPERATION[shape.kind]} batch start {shape.model}",
            context=Context(),
            start_time=batch.start_unix_ns,
            attributes={attrs.SPAN_KIND: attrs.BATCH_START_SPAN, attrs.BATCH_ID: batch.batch_id},
        )
        span.end(end_time=batch.start_unix_ns)

    def batch_span(self, batch: Batch) -> None:
        """One span for one pipeline call."""
        shape = batch.shape
        span = self.tracer.start_span(
            f"{_OPERATION[shape.kind]} batch {shape.model}",
            context=Context(),
            start_time=batch.start_unix_ns,
            attributes={
                attrs.SPAN_KIND: attrs.BATCH_SPAN,
                attrs.BATCH_ID: batch.batch_id,
                attrs.BATCH_SIZE: batch.items,
                attrs.BATCH_MEMBERS: [j.request_id for j in batch.jobs],
                attrs.BATCH_MEMBER_UNITS: batch.member_units(),
                attrs.WORK_UNITS: sum(batch.member_units()),
                attrs.DENOISE_STEPS: shape.steps,
                attrs.OUTPUT_WIDTH: shape.width,
                attrs.OUTPUT_HEIGHT: shape.height,
                attrs.OUTPUT_FRAMES: shape.frames,
                attrs.MODEL: shape.model,
                attrs.OPERATION: _OPERATION[shape.kind],
            },
        )
        if batch.error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(batch.error)[:200]))
        span.end(end_time=batch.end_unix_ns)
        self._batch_contexts[batch.batch_id] = span.get_span_context()
        while len(self._batch_contexts) > 4096:
            self._batch_contexts.pop(next(iter(self._batch_contexts)))

    def request_span(self, job: Job, parent: Context, status: str, output_units: int) -> None:
        """One span per request that ran (``status``: ok, error, disconnected)."""
        batch = job.batch
        if batch is None:
            return
        shape = job.spec.shape
        a: dict[str, Any] = {
            attrs.SPAN_KIND: attrs.REQUEST_SPAN,
            attrs.REQUEST_ID: job.request_id,
            attrs.BATCH_ID: batch.batch_id,
            attrs.BATCH_SIZE: batch.items,
            attrs.WORK_UNITS: shape.units_per_item * job.spec.n,
            attrs.DENOISE_STEPS: shape.steps,
            attrs.OUTPUT_WIDTH: shape.width,
            attrs.OUTPUT_HEIGHT: shape.height,
            attrs.OUTPUT_FRAMES: shape.frames,
            attrs.OUTPUT_UNITS: output_units,
            attrs.UNIT: shape.kind,
            attrs.MODEL: shape.model,
            attrs.OPERATION: _OPERATION[shape.kind],
            attrs.TASK: f"text-to-{shape.kind}",
            attrs.REQUEST_STATUS: status,
        }
        if shape.kind == "video":
            a[attrs.OUTPUT_FPS] = job.spec.fps
        ctx = self._batch_contexts.get(batch.batch_id)
        links = [trace.Link(ctx)] if ctx is not None else []
        span = self.tracer.start_span(
            f"{_OPERATION[shape.kind]} {shape.model}",
            context=parent,
            start_time=job.arrival_unix_ns,
            attributes=a,
            links=links,
            kind=trace.SpanKind.SERVER,
        )
        if status != "ok":
            span.set_status(trace.Status(trace.StatusCode.ERROR, status))
        span.end()

    def shutdown(self) -> None:
        """Flush pending spans and stop the exporter."""
        self.provider.shutdown()
