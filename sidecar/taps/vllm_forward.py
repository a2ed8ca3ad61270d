"""Enriched spans: each vLLM request span, forwarded upstream with its energy once final.

The span handler hands over every ``llm_request`` span (:meth:`SpanForwarder.on_span`);
the sidecar hands over final records (:meth:`SpanForwarder.on_final`). When
both are there for a request id, the span is re-sent to an upstream OTLP/gRPC
endpoint (an OTel Collector, Tempo, Jaeger) with the same trace and span ids,
its attributes, and

``jouletrace.energy.joules``, ``.prefill_joules``, ``.decode_joules``,
``.joules_per_output_token`` (absent without output), ``.approximate``,
``jouletrace.energy.source`` and ``jouletrace.energy.rule``.

Sending runs on its own thread with a bounded queue: a slow or absent
upstream costs the sidecar nothing but dropped (counted) spans.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import TypeVar

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from sidecar.attribution.records import RequestEnergy
from sidecar.taps.spans import AttrValue, ReceivedSpan

__all__ = ["SpanForwarder", "energy_attributes"]

log = logging.getLogger(__name__)

_MAX_WAITING = 20_000
_V = TypeVar("_V")


def energy_attributes(rec: RequestEnergy) -> dict[str, AttrValue]:
    """The ``jouletrace.energy.*`` attributes of a final record (joules)."""
    attrs: dict[str, AttrValue] = {
        "jouletrace.energy.joules": rec.energy_j,
        "jouletrace.energy.prefill_joules": rec.phase_j.get("prefill", 0.0),
        "jouletrace.energy.decode_joules": rec.phase_j.get("decode", 0.0),
        "jouletrace.energy.approximate": rec.approximate,
        "jouletrace.energy.source": rec.energy_source,
        "jouletrace.energy.rule": rec.rule,
    }
    per_unit = rec.joules_per_output_unit
    if per_unit is not None:
        attrs["jouletrace.energy.joules_per_output_token"] = per_unit
    if rec.task != "unknown":
        attrs["jouletrace.task"] = rec.task
    return attrs


def _any(value: AttrValue) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    return AnyValue(string_value=str(value))


def _kvs(attrs: dict[str, AttrValue]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any(v)) for k, v in attrs.items()]


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def enriched_span(span: ReceivedSpan, rec: RequestEnergy) -> ResourceSpans:
    """The OTLP ``ResourceSpans`` of ``span`` with ``rec``'s energy attributes added."""
    out = Span(
        trace_id=_hex(span.trace_id),
        span_id=_hex(span.span_id),
        parent_span_id=_hex(span.parent_span_id),
        name=span.name,
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=int(span.start_unix_s * 1e9),
        end_time_unix_nano=int(span.end_unix_s * 1e9),
        attributes=_kvs({**span.attributes, **energy_attributes(rec)}),
    )
    scope = InstrumentationScope(name=span.scope or "vllm", version="jouletrace")
    return ResourceSpans(
        resource=Resource(attributes=_kvs(span.resource)),
        scope_spans=[ScopeSpans(scope=scope, spans=[out])],
    )


class SpanForwarder:
    """Joins request spans with final records and exports them to ``endpoint`` (host:port)."""

    def __init__(self, endpoint: str, *, max_queue: int = 10_000, timeout_s: float = 5.0) -> None:
        self.endpoint = endpoint.removeprefix("grpc://").removeprefix("http://")
        self.timeout_s = timeout_s
        self.counts: Counter[str] = Counter()
        self._spans: OrderedDict[str, ReceivedSpan] = OrderedDict()
        self._finals: OrderedDict[str, RequestEnergy] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.Queue[ResourceSpans | None] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        self._thread = threading.Thread(target=self._run, name="jouletrace-forward", daemon=True)
        self._thread.start()
        return 0

    def stop(self, grace_s: float = 1.0) -> None:
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=grace_s)
            self._thread.join(timeout=grace_s + self.timeout_s)
            self._thread = None

    def on_span(self, request_id: str, span: ReceivedSpan) -> None:
        """A request span arrived (sidecar loop)."""
        with self._lock:
            rec = self._finals.pop(request_id, None)
            if rec is None:
                _put(self._spans, request_id, span)
                return
        self._send(span, rec)

    def on_final(self, records: Sequence[RequestEnergy]) -> None:
        """Records became final (sidecar loop)."""
        for rec in records:
            with self._lock:
                span = self._spans.pop(rec.request_id, None)
                if span is None:
                    _put(self._finals, rec.request_id, rec)
                    continue
            self._send(span, rec)

    def _send(self, span: ReceivedSpan, rec: RequestEnergy) -> None:
        try:
            self._queue.put_nowait(enriched_span(span, rec))
        except queue.Full:
            self.counts["dropped"] += 1

    def _run(self) -> None:
        channel = grpc.insecure_channel(self.endpoint)
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < 512:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self._export(stub, batch)
                        return
                    batch.append(item)
                self._export(stub, batch)
        finally:
            channel.close()

    def _export(self, stub: trace_service_pb2_grpc.TraceServiceStub, batch: list[ResourceSpans]) -> None:
        try:
            request = trace_service_pb2.ExportTraceServiceRequest(resource_spans=batch)
            stub.Export(request, timeout=self.timeout_s)
            self.counts["forwarded"] += len(batch)
        except grpc.RpcError as err:
            self.counts["failed"] += len(batch)
            log.debug("forwarding %d spans to %s failed: %s", len(batch), self.endpoint, err)


def _put(table: OrderedDict[str, _V], key: str, value: _V) -> None:
    table[key] = value
    while len(table) > _MAX_WAITING:
        table.popitem(last=False)
