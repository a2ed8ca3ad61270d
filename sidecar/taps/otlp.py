"""OTLP/gRPC trace receiver (port 4317): spans in, work events out.

vLLM started with ``--otlp-traces-endpoint`` and the diffusion server send
their spans here. The gRPC handler only decodes and queues (a bounded deque,
thread-safe); the sidecar's tick drains the queue on its own loop and hands
each span to the registered :class:`~sidecar.taps.spans.SpanHandler` s, so
attribution is only ever touched from one thread. The receiver is a work
source: ``due(now_s)`` returns the events and request infos made since the
last call.

Faults: a payload over ``max_message_bytes`` is refused by gRPC with
RESOURCE_EXHAUSTED; an undecodable one fails its call (gRPC status), never
the server; spans no handler claims are counted (``ignored``); a full queue
drops the newest spans and counts them (``dropped``).
"""

from __future__ import annotations

import errno
import logging
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from sidecar.attribution.events import RequestInfo, StepBatch, WorkEvent
from sidecar.attribution.records import TapReport
from sidecar.taps.spans import AttrValue, ReceivedSpan, SpanHandler, TapOutput
from sidecar.taps.tap import merge_reports

__all__ = ["OtlpReceiver", "decode_request"]

log = logging.getLogger(__name__)


def _value(v: AnyValue) -> AttrValue:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return str(v) if kind else ""


def _attrs(kvs: Iterable[KeyValue]) -> dict[str, AttrValue]:
    return {kv.key: _value(kv.value) for kv in kvs}


def decode_request(req: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    """Flatten an OTLP export into :class:`ReceivedSpan` s."""
    out: list[ReceivedSpan] = []
    for rs in req.resource_spans:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    ReceivedSpan(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        name=s.name,
                        start_unix_s=s.start_time_unix_nano / 1e9,
                        end_unix_s=s.end_time_unix_nano / 1e9,
                        attributes=_attrs(s.attributes),
                        resource=resource,
                        scope=ss.scope.name,
                    )
                )
    return out


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(  # the gRPC method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver.accept(decode_request(request))
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """A gRPC OTLP trace endpoint feeding span handlers."""

    knob = "otlp_port"  # named when the port cannot be bound

    def __init__(
        self,
        handlers: Sequence[SpanHandler],
        *,
        host: str = "0.0.0.0",
        port: int = 4317,
        max_message_bytes: int = 4 * 1024 * 1024,
        max_queued_spans: int = 100_000,
    ) -> None:
        self.handlers = list(handlers)
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self._queue: deque[ReceivedSpan] = deque()
        self._max_queued = max_queued_spans
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.received = 0
        self.ignored = 0
        self.dropped = 0

    def start(self) -> int:
        """Start serving; returns the bound port (``port=0`` picks a free one)."""
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Servicer(self), server)  # type: ignore[no-untyped-call]
        try:
            bound: int = server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError:  # grpcio >= 1.6x raises instead of returning 0
            bound = 0
        if bound == 0:
            raise OSError(
                errno.EADDRINUSE, f"cannot bind the OTLP receiver to {self.host}:{self.port} (in use?)"
            )
        server.start()
        self._server = server
        self.port = bound
        log.info("OTLP/gRPC trace receiver on %s:%d", self.host, bound)
        return bound

    def stop(self, grace_s: float = 1.0) -> None:
        if self._server is not None:
            self._server.stop(grace_s).wait()
            self._server = None

    def accept(self, spans: list[ReceivedSpan]) -> None:
        """Queue decoded spans (called on gRPC worker threads, or directly by tests)."""
        with self._lock:
            self.received += len(spans)
            room = self._max_queued - len(self._queue)
            if room < len(spans):
                self.dropped += len(spans) - max(room, 0)
                spans = spans[: max(room, 0)]
            self._queue.extend(spans)

    def due(self, now_s: float) -> tuple[list[WorkEvent | StepBatch], list[RequestInfo]]:
        """Hand every queued span to the handlers; return what they made."""
        with self._lock:
            spans = list(self._queue)
            self._queue.clear()
        out = TapOutput()
        for span in spans:
            if not any(h.handle(span, out) for h in self.handlers):
                self.ignored += 1
        return out.events, out.infos

    def stats(self) -> TapReport:
        """Spans received, ignored (no handler claimed them) and dropped, plus each handler's counters."""
        own = TapReport(events={("otlp", "received"): self.received, ("otlp", "ignored"): self.ignored,
                                ("otlp", "dropped"): self.dropped})  # fmt: skip
        return merge_reports([own, *(h.stats() for h in self.handlers)])
