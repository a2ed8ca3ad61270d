"""The client side of ``benchmarks/ingest_grpc.py``: vLLM ``llm_request`` spans as OTLP exports.

``--pool`` exports of 512 spans (the OTel BatchSpanProcessor's default batch) are
built and serialised once, with the attributes vLLM sets (``do_tracing`` in
``vllm/v1/engine/output_processor.py``); their times and ids are placeholders
whose byte offsets are found by sentinel values. :meth:`Export.stamped` writes
each span's times, trace id tail and request id digits into a copy, so every
send carries unique ids and spans that ended just before it; :func:`send_all`
sends them over real gRPC.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.rpc.error_details_pb2 import RetryInfo  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

__all__ = [
    "EXPORT_SPANS",
    "MAX_ATTEMPTS",
    "METHOD",
    "Export",
    "build_exports",
    "open_export",
    "retry_delay_s",
    "send_all",
]

EXPORT_SPANS = 512  # BatchSpanProcessor's max_export_batch_size default
MAX_ATTEMPTS = 6  # sends of one export before an exporter gives up (the Python OTLP exporter's _MAX_RETRYS)
METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# placeholders found in the serialised bytes, low 16 bits = the span's index (x 2, +1 for the end time)
_TIME_SENTINEL = 0x5A17_E1A5_C3D0_0000
_TRACE_SENTINEL = 0x7EC3_0B1D_A95E_0000
# request ids: the serial times an odd constant, mod 16**24 (a bijection: unique), so they look as
# random as vLLM's chatcmpl-<uuid hex> do; counting ids would let the ledger's index only append
_SCRAMBLE, _ID_SPACE = 0x9E37_79B9_7F4A_7C15_F39C_C061, 16**24


@dataclass
class Export:
    """One pre-serialised export and where its per-span timestamps and ids sit in the bytes."""

    data: bytes
    start_at: np.ndarray  # byte offsets of each span's start_time_unix_nano (fixed64, little-endian)
    end_at: np.ndarray
    trace_at: np.ndarray  # offsets of the last 8 bytes of each span's trace id
    rid_at: np.ndarray  # offsets of the 24 hex digits of each span's request id
    e2e_ns: np.ndarray  # each span's duration
    lag_ns: np.ndarray  # how long before the send each span ended

    def stamped(self, now_ns: int, serial: int) -> bytes:
        """A copy ending every span ``lag_ns`` before ``now_ns``, ids unique from ``serial`` on."""
        buf = bytearray(self.data)
        view = np.frombuffer(buf, dtype=np.uint8)
        end = (now_ns - self.lag_ns).astype("<u8")
        start = (end - self.e2e_ns).astype("<u8")
        serials = np.arange(serial, serial + self.start_at.size, dtype="<u8")
        hex_ids = "".join(f"{k * _SCRAMBLE % _ID_SPACE:024x}" for k in serials.tolist()).encode()
        for at, values in ((self.end_at, end), (self.start_at, start), (self.trace_at, serials)):
            view[at[:, None] + np.arange(8)] = values.view(np.uint8).reshape(-1, 8)
        view[self.rid_at[:, None] + np.arange(24)] = np.frombuffer(hex_ids, np.uint8).reshape(-1, 24)
        return bytes(buf)


def _kv(key: str, value: str | int | float) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(double_value=value))


def _vllm_spans(rng: np.random.Generator, e2e_s: np.ndarray) -> list[Span]:
    """``llm_request`` spans with the attributes vLLM's ``do_tracing`` sets; ids, times: placeholders."""
    n = e2e_s.size
    prompt, completion = rng.integers(64, 2048, n).tolist(), rng.integers(8, 64, n).tolist()
    queue_s, prefill_s = rng.uniform(0.0, 0.05, n), rng.uniform(0.02, 0.1, n)
    decode_s = np.maximum(e2e_s - queue_s - prefill_s - 0.005, 0.0)
    span_ids = rng.bytes(8 * n)
    spans = []
    for i, (q, p, d, e) in enumerate(
        zip(queue_s.tolist(), prefill_s.tolist(), decode_s.tolist(), e2e_s.tolist(), strict=True)
    ):
        attributes = {
            "gen_ai.latency.time_to_first_token": q + p + 0.002,
            "gen_ai.latency.e2e": e,
            "gen_ai.latency.time_in_queue": q,
            "gen_ai.usage.prompt_tokens": prompt[i],
            "gen_ai.usage.completion_tokens": completion[i],
            "gen_ai.latency.time_in_model_prefill": p,
            "gen_ai.latency.time_in_model_decode": d,
            "gen_ai.latency.time_in_model_inference": p + d,
            "gen_ai.request.id": "chatcmpl-" + "0" * 24,  # unique digits are written at send time
            "gen_ai.request.top_p": 0.95,
            "gen_ai.request.max_tokens": 512,
            "gen_ai.request.temperature": 0.7,
            "gen_ai.request.n": 1,
        }
        spans.append(
            Span(
                trace_id=(_TRACE_SENTINEL + i).to_bytes(8, "little")
                + bytes(8),  # last 8: written at send time
                span_id=span_ids[8 * i : 8 * i + 8],
                name="llm_request",
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=_TIME_SENTINEL + 2 * i,
                end_time_unix_nano=_TIME_SENTINEL + 2 * i + 1,
                attributes=[_kv(k, v) for k, v in attributes.items()],
            )
        )
    return spans


def _sentinels(arr: np.ndarray, base: int, n: int, skip: int = 0) -> np.ndarray:
    """Offsets of the fixed64 values ``base + k`` (k < n; ``base``'s low 16 bits 0) in ``arr``, by k."""
    high = np.frombuffer((base >> 16).to_bytes(6, "little"), dtype=np.uint8)
    at = np.flatnonzero(arr[2 : arr.size - 5] == high[0])  # candidates: offsets of the low 2 bytes
    for k in range(1, 6):
        at = at[arr[at + 2 + k] == high[k]]
    low = arr[at].astype(np.int64) | (arr[at + 1].astype(np.int64) << 8)
    if at.size != n or sorted(low.tolist()) != list(range(n)):
        raise RuntimeError("sentinels not found exactly once each")
    out = np.empty(n, dtype=np.int64)
    out[low] = at + skip
    return out


def _offsets(data: bytes, n: int) -> tuple[np.ndarray, ...]:
    """Where the n spans' start and end times, trace id tails and request id digits are."""
    arr = np.frombuffer(data, dtype=np.uint8)
    times = _sentinels(arr, _TIME_SENTINEL, 2 * n)
    marker = np.frombuffer(b"chatcmpl-", dtype=np.uint8)
    rid = np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(arr, marker.size) == marker, axis=1))
    if rid.size != n:
        raise RuntimeError("request ids not found once per span")
    trace = _sentinels(arr, _TRACE_SENTINEL, n, skip=8)
    return times[0::2], times[1::2], trace, rid + marker.size


def build_exports(pool: int, seed: int = 0) -> list[Export]:
    """``pool`` different exports of :data:`EXPORT_SPANS` vLLM spans, serialised, placeholders located."""
    rng = np.random.default_rng(seed)
    resource = Resource(
        attributes=[
            _kv("service.name", "vllm"),
            _kv("telemetry.sdk.language", "python"),
            _kv("telemetry.sdk.name", "opentelemetry"),
            _kv("telemetry.sdk.version", "1.45.2"),
        ]
    )
    scope = InstrumentationScope(name="vllm.tracing.otel")  # vLLM's tracer: trace.get_tracer(__name__)
    exports = []
    for _ in range(pool):
        e2e_s = rng.uniform(0.3, 1.8, EXPORT_SPANS)
        spans = _vllm_spans(rng, e2e_s)
        scope_spans = ScopeSpans(scope=scope, spans=spans)
        data = ExportTraceServiceRequest(
            resource_spans=[ResourceSpans(resource=resource, scope_spans=[scope_spans])]
        ).SerializeToString()
        lag_s = rng.uniform(0.0, 0.02, EXPORT_SPANS)  # a flooded BatchSpanProcessor exports within ms
        exports.append(
            Export(
                data,
                *_offsets(data, EXPORT_SPANS),
                (e2e_s * 1e9).astype(np.uint64),
                (lag_s * 1e9).astype(np.uint64),
            )
        )
    return exports


def retry_delay_s(err: grpc.RpcError) -> float:
    """The delay a refused export's ``RetryInfo`` asks for (``google.rpc.retryinfo-bin``, the key the
    Python OTLP exporter reads); 1 s without one."""
    trailing = dict(getattr(err, "trailing_metadata", lambda: None)() or ())
    raw = trailing.get("google.rpc.retryinfo-bin")
    if raw is None:
        return 1.0
    info = RetryInfo.FromString(raw)
    return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)


@dataclass
class _Sends:
    """:func:`send_all`'s exports in flight and refused ones waiting to be sent again."""

    pending: deque[tuple[Any, bytes, int]] = field(default_factory=deque)  # future, bytes, attempt
    retries: deque[tuple[float, bytes, int]] = field(default_factory=deque)  # due (monotonic), ...
    counts: Counter[str] = field(default_factory=Counter)

    def settle(self) -> None:
        """Wait for the oldest send; a retryable refusal (UNAVAILABLE) is sent again after its
        ``RetryInfo`` delay, as OTel's exporters do, at most :data:`MAX_ATTEMPTS` sends."""
        future, data, attempt = self.pending.popleft()
        try:
            response = future.result(timeout=60)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE:
                self.counts["failed"] += 1
            elif attempt + 1 >= MAX_ATTEMPTS:
                self.counts["given_up"] += EXPORT_SPANS
            else:
                self.counts["refused"] += 1
                self.retries.append((time.monotonic() + retry_delay_s(err), data, attempt + 1))
            return
        self.counts["rejected"] += response.partial_success.rejected_spans

    def next_retry(self) -> tuple[bytes, int] | None:
        if self.retries and self.retries[0][0] <= time.monotonic():
            _, data, attempt = self.retries.popleft()
            return data, attempt
        return None


def open_export(port: int) -> tuple[grpc.Channel, Any]:
    """A ready gRPC channel to the receiver on ``port`` and its OTLP trace ``Export`` method."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
    grpc.channel_ready_future(channel).result(timeout=30)
    return channel, channel.unary_unary(METHOD, response_deserializer=ExportTraceServiceResponse.FromString)


def send_all(
    port: int,
    pool: list[Export],
    n_spans: int,
    in_flight: int,
    max_s: float,
    *,
    serial: int = 0,
    rate_spans_s: float = math.inf,
    handled: Any = None,
    window: int = 0,
) -> dict[str, float]:
    """Send ``n_spans`` (the pool's exports in turn, stamped at send time, at most ``rate_spans_s``);
    new exports stop after ``max_s`` (refused ones are still retried). Request and trace ids count
    from ``serial``. With ``handled`` (a shared counter the server updates), at most ``window``
    spans are sent and not yet handled. Refused exports (UNAVAILABLE: backpressure) are sent again
    after their ``RetryInfo`` delay (``refused`` sends); ``given_up``: spans of exports refused
    :data:`MAX_ATTEMPTS` times."""
    channel, export = open_export(port)
    sends, sent, k = _Sends(), 0, 0
    cpu0, t0 = time.process_time(), time.monotonic()
    while True:
        while sends.pending and (len(sends.pending) >= in_flight or sends.pending[0][0].done()):
            sends.settle()
        again = sends.next_retry()
        if again is not None:
            sends.pending.append((export.future(again[0]), *again))
            continue
        now = time.monotonic()
        more = k < n_spans // EXPORT_SPANS and now - t0 <= max_s
        if not more and not sends.pending and not sends.retries:
            break
        held = handled is not None and sent - handled.value > window  # the window is full
        if not more or held or t0 + sent / rate_spans_s > now:
            time.sleep(0.001)
            continue
        data = pool[k % len(pool)].stamped(time.time_ns(), serial + sent)
        sends.pending.append((export.future(data), data, 0))
        sent, k = sent + EXPORT_SPANS, k + 1
    channel.close()
    c = sends.counts
    return {
        "t0": t0,
        "sent": sent,
        "rejected": c["rejected"],
        "failed": c["failed"],
        "refused": c["refused"],
        "given_up": c["given_up"],
        "client_cpu_s": time.process_time() - cpu0,
        "send_s": time.monotonic() - t0,
    }
