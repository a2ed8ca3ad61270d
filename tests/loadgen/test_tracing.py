"""The client spans' exporter counts what it delivered and what it lost (``CountingExporter``)."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loadgen.tracing import ClientTracer, CountingExporter


class Refusing(SpanExporter):
    """An exporter whose every export fails (the first ``raising`` by raising, as a buggy one may)."""

    def __init__(self, raising: int = 0) -> None:
        self.raising = raising

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.raising:
            self.raising -= 1
            raise ConnectionError("the receiver went away")
        return SpanExportResult.FAILURE


def _spans(exporter: SpanExporter, n: int) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for i in range(n):
        provider.get_tracer("t").start_span(f"s{i}").end()


def test_delivered_spans_are_counted_exported_and_reach_the_inner_exporter() -> None:
    inner = InMemorySpanExporter()
    counting = CountingExporter(inner)
    _spans(counting, 3)
    assert counting.snapshot() == {"exported": 3, "failed": 0}
    assert [s.name for s in inner.get_finished_spans()] == ["s0", "s1", "s2"]


def test_a_failed_or_raising_export_counts_its_spans_failed() -> None:
    counting = CountingExporter(Refusing(raising=1))
    _spans(counting, 2)
    assert counting.snapshot() == {"exported": 0, "failed": 2}


def test_without_an_endpoint_nothing_is_exported_and_the_flush_is_not_reported() -> None:
    tracer = ClientTracer(None)
    tracer.shutdown()
    assert tracer.report() == {"endpoint": "", "exported": 0, "failed": 0, "flushed": None}
