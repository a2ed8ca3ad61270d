"""Span ids wider than OTLP's (16-byte trace, 8-byte span): refused on arrival, on both decode paths.

An adversarial review's find: a trace id of 512 KiB went into its request's record (and so the
ledger, ~461 B a record) and into the task tables' keys (20 exports under the size limit held
20 MiB of keys; 50,000 may be kept)."""

from __future__ import annotations

import time

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.vllm_spans import VllmSpanHandler
from tests.sidecar.taps.test_otlp_hostile import export, span

BIG = 512 * 1024  # bytes: the export stays under the 4 MiB message limit


def test_a_request_span_with_a_wide_trace_id_is_refused_and_the_good_one_kept() -> None:
    now = time.time()
    rx = OtlpReceiver([VllmSpanHandler(lambda unix_s: unix_s, wall=lambda: now)], wall=lambda: now)
    bad = span(1, now - 1)
    bad.trace_id = b"\x07" * BIG
    assert rx.receive(export(span(0, now - 1), bad).SerializeToString()) == {"bad_id": 1}
    _, infos = rx.due(0.0)
    assert len(infos) == 1 and len(str(infos[0].attributes["trace_id"])) == 32


def test_a_client_span_with_a_wide_trace_id_is_refused_and_holds_no_key() -> None:
    now = time.time()
    handler = VllmSpanHandler(lambda unix_s: unix_s, wall=lambda: now)
    rx = OtlpReceiver([handler], wall=lambda: now)
    client = Span(
        trace_id=b"\x01" * BIG,
        span_id=(1).to_bytes(8, "big"),
        name="client",
        start_time_unix_nano=int((now - 1) * 1e9),
        end_time_unix_nano=int(now * 1e9),
        attributes=[KeyValue(key="jouletrace.task", value=AnyValue(string_value="chat"))],
    )
    assert rx.receive(export(client).SerializeToString()) == {"bad_id": 1}
    rx.due(0.0)
    assert not handler.tasks._task_by_trace
