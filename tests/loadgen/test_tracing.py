"""The client spans' exporter counts what it delivered and what it lost (``CountingExporter``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loadgen import tracing
from loadgen.records import Request
from loadgen.tracing import _OTLP_LOGGER, ClientTracer, CountingExporter
from sidecar.log_limit import OncePerMinute


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
    assert counting.snapshot() == {"exported": 3, "failed": 0, "resent": 0}
    assert [s.name for s in inner.get_finished_spans()] == ["s0", "s1", "s2"]


def test_a_failed_or_raising_export_counts_its_spans_failed() -> None:
    counting = CountingExporter(Refusing(raising=1))
    _spans(counting, 2)
    assert counting.snapshot() == {"exported": 0, "failed": 2, "resent": 0}


def test_without_an_endpoint_nothing_is_exported_and_the_flush_is_not_reported() -> None:
    tracer = ClientTracer(None)
    tracer.shutdown()
    assert tracer.report() == {
        "endpoint": "",
        "exported": 0,
        "failed": 0,
        "resent": 0,
        "flushed": None,
        "errors": [],
    }


UNAVAILABLE = "Failed to export spans, error code: StatusCode.UNAVAILABLE"


class Flaky(SpanExporter):
    """Fails its first ``failing`` exports, logging why as the OTLP exporter does; then delivers.

    The OTLP exporter's logger drops a message equal to the one before it (the SDK's
    ``DuplicateFilter``, once that module is imported), so each test logs its own."""

    def __init__(self, failing: int, complaint: str = UNAVAILABLE) -> None:
        self.failing, self.complaint = failing, complaint
        self.delivered: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.failing:
            self.failing -= 1
            logging.getLogger(_OTLP_LOGGER).error(self.complaint)
            return SpanExportResult.FAILURE
        self.delivered += [s.name for s in spans]
        return SpanExportResult.SUCCESS


def test_failed_spans_are_sent_again_at_the_end_and_counted_resent() -> None:
    inner = Flaky(failing=2)
    counting = CountingExporter(inner)
    _spans(counting, 3)
    assert counting.snapshot() == {"exported": 1, "failed": 2, "resent": 0}
    counting.resend(timeout_s=5.0)
    assert counting.snapshot() == {"exported": 3, "failed": 0, "resent": 2}
    assert inner.delivered == ["s2", "s0", "s1"]


def test_spans_that_fail_again_stay_failed_and_out_of_time_is_said() -> None:
    counting = CountingExporter(Refusing())
    _spans(counting, 2)
    counting.resend(timeout_s=5.0)  # the first fails again: the second is not tried
    assert counting.snapshot() == {"exported": 0, "failed": 2, "resent": 0}
    assert counting.errors[-1] == "2 failed spans not sent again: failed again"
    _spans(counting, 1)
    counting.resend(timeout_s=0.0)
    assert counting.snapshot()["failed"] == 3
    assert counting.errors[-1] == "1 failed spans not sent again: out of time"


def test_the_exporters_logged_complaints_reach_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    # the sidecar's forwarder, when its tests ran first in this process, left its once-a-minute
    # filter on the same logger (one process each when run for real)
    logger = logging.getLogger(_OTLP_LOGGER)
    monkeypatch.setattr(logger, "filters", [f for f in logger.filters if not isinstance(f, OncePerMinute)])
    complaint = f"{UNAVAILABLE} (the report's test)"
    tracer = ClientTracer("127.0.0.1:9", exporter=Flaky(failing=1, complaint=complaint))
    tracer.start(_request(), {}).end()
    tracer.shutdown()
    report = tracer.report()
    assert report["exported"] == 1 and report["failed"] == 0 and report["resent"] == 1
    assert report["errors"] == [complaint]
    assert report["flushed"] is True


def _request() -> Request:
    return Request(id="r1", task="gpqa", api="chat", path="/v1/chat/completions", body={"model": "m"})


class Hanging(Refusing):
    """A collector that answers each export only after ``export_s``, with a failure."""

    def __init__(self, export_s: float) -> None:
        super().__init__()
        self.export_s, self.calls = export_s, 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        time.sleep(self.export_s)
        return SpanExportResult.FAILURE


def test_the_closing_flush_keeps_its_bound_however_many_spans_are_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the SDK's force_flush ignores its timeout: 20 batches at 0.2 s each took 4 s, not 0.3 s
    monkeypatch.setattr(tracing, "FLUSH_TIMEOUT_S", 0.3)
    monkeypatch.setattr(tracing, "RESEND_TIMEOUT_S", 0.2)
    inner = Hanging(export_s=0.2)
    tracer = ClientTracer("127.0.0.1:9", exporter=inner)
    for _ in range(512 * 20):
        tracer.start(_request(), {}).end()
    start = time.monotonic()
    tracer.shutdown()
    took_s = time.monotonic() - start
    assert took_s < 0.3 + 0.2 + 2 * 0.2 + 0.6  # flush + resend + two exports under way + slack
    assert inner.calls < 10
    report = tracer.report()
    assert report["flushed"] is False
    assert report["exported"] == 0 and report["failed"] == 512 * 20  # the rest is counted, not lost
    assert report["errors"][0] == "closing flush out of time after 0.3 s: rest not sent"
