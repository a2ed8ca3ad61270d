"""The OTLP receiver's backpressure: exports over the memory or backlog limit are refused, retryable."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from sidecar.container_memory import UnreadableLimit
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.otlp_limit import (
    CHECK_INTERVAL_S,
    LIMIT_REFRESH_S,
    ExportLimiter,
    Refusal,
    rss_mb,
    status_details,
)
from sidecar.taps.vllm_spans import VllmSpanHandler
from tests.sidecar.taps.test_otlp_hostile import export, span


class Clock:
    def __init__(self) -> None:
        self.t_s = 100.0

    def __call__(self) -> float:
        return self.t_s


def _limiter(
    rss: list[float], backlog: list[int], clock: Clock, trims: list[float] | None = None
) -> ExportLimiter:
    """A limiter at 200 MB / 1,000 rows reading ``rss[0]`` and ``backlog[0]``; a trim takes ``trims``."""

    def trim() -> bool:
        if not trims:
            return False
        rss[0] = trims.pop(0)
        return True

    return ExportLimiter(
        memory_limit_mb=200.0,
        backlog_limit_rows=1_000,
        backlog_rows=lambda: backlog[0],
        rss=lambda: rss[0],
        trim=trim,
        clock=clock,
    )


def test_under_both_limits_an_export_is_taken() -> None:
    assert _limiter([150.0], [999], Clock()).refusal() is None


def test_over_the_memory_limit_an_export_is_refused_for_memory_but_one_per_retry_delay_is_taken() -> None:
    """Python may keep the RSS over the limit with nothing left to free: a trickle still gets in."""
    clock = Clock()
    limiter = _limiter([250.0], [0], clock)
    assert limiter.refusal() is None  # the first export over the limit: the trickle's
    refusal = limiter.refusal()
    assert refusal is not None and refusal.reason == "memory"
    assert "250 MB" in refusal.message and "otlp_memory_limit_mb" in refusal.message
    clock.t_s += 0.5
    assert limiter.refusal() is not None  # within the retry delay (1 s): refused
    clock.t_s += 0.5
    assert limiter.refusal() is None and limiter.refusal() is not None  # one more, then refused


def test_over_the_memory_limit_freed_heap_is_given_back_first_and_counts() -> None:
    clock = Clock()
    limiter = _limiter([250.0], [0], clock, trims=[180.0])
    limiter.refusal()  # the trickle's export
    assert limiter.refusal() is None  # the trim brought it under: taken


def test_trims_are_at_most_once_a_second_and_the_rss_is_read_at_most_every_check_interval() -> None:
    clock, rss = Clock(), [250.0]
    limiter = _limiter(rss, [0], clock, trims=[240.0, 230.0])
    assert limiter.refusal() is None  # trimmed once: 240, still over; the trickle's export
    assert limiter.refusal() is not None
    rss[0] = 150.0
    assert limiter.refusal() is not None  # within the check interval: the last reading
    clock.t_s += 2 * CHECK_INTERVAL_S
    assert limiter.refusal() is None  # read again: 150
    rss[0] = 250.0
    clock.t_s += 2 * CHECK_INTERVAL_S
    assert limiter.refusal() is not None  # over again, under a second since the trim: no trim
    clock.t_s += 1.0
    assert limiter.refusal() is None and rss[0] == 230.0  # a second later: trimmed again (and the trickle)
    assert limiter.refusal() is not None  # still over


def test_over_the_backlog_limit_an_export_is_refused_for_backlog() -> None:
    refusal = _limiter([150.0], [1_001], Clock()).refusal()
    assert refusal is not None and refusal.reason == "backlog"
    assert "1001 work rows" in refusal.message and "otlp_backlog_limit_rows" in refusal.message


def test_over_the_requests_limit_an_export_is_refused_for_backlog_before_requests_are_evicted() -> None:
    in_flight = [90]
    limiter = ExportLimiter(requests_limit=90, requests=lambda: in_flight[0], rss=lambda: 1e9)
    assert limiter.refusal() is None
    in_flight[0] = 91
    refusal = limiter.refusal()
    assert refusal is not None and refusal.reason == "backlog"
    assert "91 requests in flight" in refusal.message and "max_requests" in refusal.message


def test_zero_limits_turn_the_checks_off() -> None:
    limiter = ExportLimiter(
        memory_limit_mb=0.0,
        backlog_limit_rows=0,
        backlog_rows=lambda: 10**9,
        requests=lambda: 10**9,
        rss=lambda: 1e9,
    )
    assert limiter.refusal() is None


def test_a_limit_that_can_change_is_read_again_every_refresh_interval_and_the_change_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A container's limit resized in place: 400 MB, then 200 MB; a 250 MB process is refused only
    once the limit has been read again, which is at most every LIMIT_REFRESH_S."""
    clock, limit = Clock(), [400.0]
    reads: list[float] = []

    def now_limit() -> float:
        reads.append(clock.t_s)
        return limit[0]

    limiter = ExportLimiter(memory_limit_mb=400.0, memory_limit=now_limit, rss=lambda: 250.0, clock=clock)
    assert limiter.refusal() is None and reads == []  # the limit given is the one read at start
    limit[0] = 200.0
    clock.t_s += LIMIT_REFRESH_S / 2
    assert limiter.refusal() is None and reads == []
    clock.t_s += LIMIT_REFRESH_S / 2
    with caplog.at_level(logging.INFO, logger="sidecar.taps.otlp_limit"):
        limiter.refusal()  # the trickle's: the first export over the new limit
        clock.t_s += CHECK_INTERVAL_S
        refusal = limiter.refusal()
    assert reads == [100.0 + LIMIT_REFRESH_S]
    assert refusal is not None and refusal.reason == "memory" and "limit 200 MB" in refusal.message
    assert "OTLP memory limit now 200 MB, was 400 MB" in caplog.text
    limit[0] = 0.0  # no limit any more: taken again
    clock.t_s += LIMIT_REFRESH_S
    assert limiter.refusal() is None and limiter.memory_limit_mb == 0.0


def test_a_limit_that_cannot_be_read_again_is_kept_and_said_once_while_it_lasts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, failing = Clock(), [True]

    def now_limit() -> float:
        if failing[0]:
            raise UnreadableLimit("memory.max: Too many open files")
        return 300.0

    limiter = ExportLimiter(memory_limit_mb=200.0, memory_limit=now_limit, rss=lambda: 250.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="sidecar.taps.otlp_limit"):
        for _ in range(3):  # three reads fail: the 200 MB stays and judges each export
            clock.t_s += LIMIT_REFRESH_S
            limiter.refusal()
            clock.t_s += CHECK_INTERVAL_S
            refusal = limiter.refusal()
            assert refusal is not None and refusal.reason == "memory" and limiter.memory_limit_mb == 200.0
    assert caplog.text.count("cannot be read again (memory.max: Too many open files); 200 MB kept") == 1
    failing[0] = False
    clock.t_s += LIMIT_REFRESH_S
    assert limiter.refusal() is None and limiter.memory_limit_mb == 300.0


def test_the_rss_of_this_process_is_read_from_proc() -> None:
    assert 5.0 < rss_mb() < 100_000.0


def test_the_status_details_carry_unavailable_and_the_retry_delay_both_ways() -> None:
    details = dict(status_details("busy", 1.25))
    status = status_pb2.Status.FromString(details["grpc-status-details-bin"])
    assert status.code == code_pb2.UNAVAILABLE and status.message == "busy"
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (1, 250_000_000)
    assert error_details_pb2.RetryInfo.FromString(details["google.rpc.retryinfo-bin"]) == retry


class Switch:
    """A memory reading the test turns over and under the limit."""

    def __init__(self) -> None:
        self.over = True

    def __call__(self) -> float:
        return 300.0 if self.over else 100.0


@pytest.fixture
def switch() -> Switch:
    return Switch()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def receiver(switch: Switch, clock: Clock) -> Iterator[OtlpReceiver]:
    """A receiver over its memory limit (until the test says otherwise) whose trickle is spent."""
    limiter = ExportLimiter(
        memory_limit_mb=200.0, rss=switch, trim=lambda: False, retry_delay_s=0.2, clock=clock
    )
    assert limiter.refusal() is None  # the trickle's export: the next ones within 0.2 s are refused
    rec = OtlpReceiver([VllmSpanHandler(lambda unix_s: unix_s)], port=0, limiter=limiter)
    rec.start()
    yield rec
    rec.stop(0)


def test_over_real_grpc_an_export_over_the_limit_gets_a_retryable_unavailable_and_is_counted(
    receiver: OtlpReceiver, switch: Switch, clock: Clock
) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{receiver.port}")
    stub = trace_service_pb2_grpc.TraceServiceStub(channel)
    now = time.time()
    with pytest.raises(grpc.RpcError) as refused:
        stub.Export(export(span(0, now)), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    trailing = dict(refused.value.trailing_metadata())
    delay = error_details_pb2.RetryInfo.FromString(trailing["google.rpc.retryinfo-bin"]).retry_delay
    assert (delay.seconds, delay.nanos) == (0, 200_000_000)
    assert receiver.stats().events[("otlp", "refused_memory")] == 1
    assert receiver.received == 0  # refused before it was decoded
    switch.over = False
    clock.t_s += 2 * CHECK_INTERVAL_S  # the RSS is read again: under the limit
    assert not stub.Export(export(span(1, now)), timeout=5).HasField("partial_success")
    _, infos = receiver.due(0.0)
    assert [i.request_id for i in infos] == ["r1"]
    channel.close()


def test_the_python_otlp_exporter_backs_off_and_its_retry_is_taken(receiver: OtlpReceiver) -> None:
    """vLLM's exporter: refused once, it waits the RetryInfo delay and sends the same spans again."""
    calls = 0

    def once() -> Refusal | None:
        nonlocal calls
        calls += 1
        return Refusal("memory", "over the limit (test)") if calls == 1 else None

    receiver.limiter.refusal = once  # type: ignore[method-assign]
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{receiver.port}", insecure=True, timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": "vllm"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    attrs: dict[str, str | int] = {"gen_ai.request.id": "chatcmpl-x1", "gen_ai.usage.completion_tokens": 4}
    started = time.monotonic()
    with provider.get_tracer("vllm").start_as_current_span("llm_request", attributes=attrs):
        pass
    took_s = time.monotonic() - started
    provider.shutdown()
    assert calls == 2 and took_s >= 0.2  # refused, waited the delay, retried
    assert receiver.stats().events[("otlp", "refused_memory")] == 1
    _, infos = receiver.due(0.0)
    assert [i.request_id for i in infos] == ["x1"]
