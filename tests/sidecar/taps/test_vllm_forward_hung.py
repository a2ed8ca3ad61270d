"""The span forwarder against a hung upstream: its stop keeps to the grace it is given, and what
waits to be sent is bounded in bytes as well as in spans.

The upstream is a real gRPC server (in process) whose ``Export`` never answers until the test ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from sidecar.taps import vllm_forward
from sidecar.taps.vllm_forward import SpanForwarder
from tests.sidecar.taps.test_vllm_forward import record, span
from tests.support import wait_for

_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


@pytest.fixture
def hung_upstream() -> Iterator[tuple[int, list[int]]]:
    """A port whose Export holds every call (their payload sizes listed) until the test is over."""
    release = threading.Event()
    calls: list[int] = []

    def export(payload: bytes, context: Any) -> bytes:
        calls.append(len(payload))
        release.wait(30.0)
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(export)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, {"Export": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, calls
    release.set()
    server.stop(0)


def forwarder(port: int, monkeypatch: pytest.MonkeyPatch, max_sending_bytes: int) -> SpanForwarder:
    """A started forwarder to ``port`` with a small byte bound on what waits to be sent."""
    monkeypatch.setattr(vllm_forward, "_MAX_SENDING_BYTES", max_sending_bytes)
    fwd = SpanForwarder(f"127.0.0.1:{port}", timeout_s=30.0)
    fwd.start()
    return fwd


def send_big(fwd: SpanForwarder, rid: str, text_bytes: int) -> None:
    """A final record, then its span carrying a client attribute of ``text_bytes``."""
    big = span(f"chatcmpl-{rid}")
    big.attributes["big"] = "x" * text_bytes
    fwd.on_final([record(rid)])
    fwd.on_span(rid, big)


def test_a_stop_against_a_hung_upstream_returns_within_its_grace_and_counts_what_it_dropped(
    hung_upstream: tuple[int, list[int]],
) -> None:
    port, calls = hung_upstream
    fwd = SpanForwarder(f"127.0.0.1:{port}", timeout_s=30.0)
    fwd.start()
    for k in range(20):
        rid = f"r{k:02d}"
        fwd.on_final([record(rid)])
        fwd.on_span(rid, span(f"chatcmpl-{rid}"))
    wait_for(lambda: bool(calls), 10.0, what="the first export to reach the hung upstream")
    t0 = time.monotonic()
    fwd.stop(0.5)
    assert time.monotonic() - t0 < 2.0  # the SDK's own shutdown would wait 30 s here
    assert fwd.counts["dropped_at_stop"] == 20 and fwd.counts["forwarded"] == 0


def test_spans_waiting_to_be_sent_are_bounded_by_their_bytes(
    hung_upstream: tuple[int, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _ = hung_upstream
    fwd = forwarder(port, monkeypatch, 1_000_000)
    try:
        for k in range(40):
            send_big(fwd, f"r{k:02d}", 100_000)  # a client's attribute: 0.1 MB a span
        assert fwd._sending_bytes <= 1_000_000  # ten spans at most, whatever the span count cap says
        assert fwd.counts["dropped"] == 40 - fwd._in_flight and fwd._in_flight == 9
    finally:
        fwd.stop(0.1)


def test_one_span_over_the_byte_bound_is_still_sent_when_nothing_else_waits(
    hung_upstream: tuple[int, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, calls = hung_upstream
    fwd = forwarder(port, monkeypatch, 1_000)
    try:
        send_big(fwd, "a", 5_000)
        wait_for(lambda: bool(calls), 10.0, what="the one span to be exported")
        assert fwd.counts["dropped"] == 0 and calls[0] > 5_000
    finally:
        fwd.stop(0.1)
