"""OTLP trace exports decoded whole, the retry-check key of a span, and the export's answer.

:func:`decode_request` flattens an ``ExportTraceServiceRequest`` into
:class:`~sidecar.taps.spans.ReceivedSpan` s (every attribute as plain Python),
for the spans no row handler takes as columns (:mod:`.span_rows`).
:func:`decode_export` does it from the payload; where protobuf refuses the whole export
but its lean parse read it (a string that is not UTF-8, which proto3 forbids, in one span,
resource or scope), it decodes the spans one at a time and refuses only those it cannot read,
so one bad span does not cost its neighbours.
:func:`span_key` / :func:`row_key` give a span's (trace id, span id, name) as one
key, the same for a span decoded whole (hex ids) or as a row (id bytes).
:func:`respond` is OK, or ``partial_success`` with the refused count and why.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Container, Iterable
from typing import Any

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2

from sidecar.taps.spans import AttrValue, ReceivedSpan, attr_value

__all__ = ["decode_export", "decode_request", "respond", "row_key", "span_key"]


def _attrs(kvs: Iterable[KeyValue]) -> dict[str, AttrValue]:
    # Keys interned: protobuf makes a new str per key per span, and a queued span's ~17 keys
    # were about 1.2 KB of its ~3 KB. An interned str is freed like any other once nothing holds it.
    return {sys.intern(kv.key): attr_value(kv.value) for kv in kvs}


def decode_request(
    req: trace_service_pb2.ExportTraceServiceRequest, only: Container[int] | None = None
) -> list[ReceivedSpan]:
    """Flatten an OTLP export into :class:`ReceivedSpan` s (``only``: just the spans at these positions)."""
    out: list[ReceivedSpan] = []
    k = -1
    for rs in req.resource_spans:
        resource: dict[str, AttrValue] | None = None
        for ss in rs.scope_spans:
            for s in ss.spans:
                k += 1
                if only is not None and k not in only:
                    continue
                if resource is None:
                    resource = _attrs(rs.resource.attributes)
                out.append(_received(s, resource, ss.scope.name))
    return out


def _received(s: trace_pb2.Span, resource: dict[str, AttrValue], scope: str) -> ReceivedSpan:
    """One decoded span, its resource's attributes shared with the other spans of that resource."""
    return ReceivedSpan(
        trace_id=s.trace_id.hex(),
        span_id=s.span_id.hex(),
        parent_span_id=s.parent_span_id.hex(),
        name=s.name,
        start_unix_s=s.start_time_unix_nano / 1e9,
        end_unix_s=s.end_time_unix_nano / 1e9,
        attributes=_attrs(s.attributes),
        resource=resource,
        scope=scope,
    )


def decode_export(
    payload: bytes, lean: Any, only: Container[int] | None = None
) -> tuple[list[ReceivedSpan], int]:
    """:func:`decode_request` of the payload (``only``: the spans at these positions), and how many
    of those spans could not be decoded; ``lean``: the payload as the lean schema read it
    (:data:`~sidecar.taps.span_rows.LeanExport`, which reads every string as bytes)."""
    try:
        full = trace_service_pb2.ExportTraceServiceRequest.FromString(payload)
    except DecodeError:  # the wire format was read (the lean parse): a string protobuf refuses
        return _one_by_one(lean, only)
    return decode_request(full, only), 0


def _one_by_one(lean: Any, only: Container[int] | None) -> tuple[list[ReceivedSpan], int]:
    """Each span of a lean parse decoded on its own; each resource and scope decoded once (a span
    of a resource or scope protobuf cannot read is not readable either), its attributes shared by
    its spans. (Decoding each span with its resource made an export with one bad string and a big
    resource cost its resource's decode, and a copy of it, per span.)"""
    out: list[ReceivedSpan] = []
    bad = 0
    k = -1
    for rs in lean.resource_spans:
        resource = _part(Resource, rs.resource)
        attrs: dict[str, AttrValue] | None = None
        for ss in rs.scope_spans:
            scope = _part(InstrumentationScope, ss.scope)
            for s in ss.spans:
                k += 1
                if only is not None and k not in only:
                    continue
                readable = resource is not None and scope is not None
                span = _part(trace_pb2.Span, s.SerializeToString()) if readable else None
                if span is None:
                    bad += 1
                    continue
                if attrs is None:
                    attrs = _attrs(resource.attributes)
                out.append(_received(span, attrs, scope.name))
    return out, bad


def _part(cls: Any, raw: bytes) -> Any:
    """``raw`` decoded as ``cls``, or None where protobuf refuses it (a string that is not UTF-8)."""
    try:
        return cls.FromString(raw)
    except DecodeError:
        return None


def span_key(trace_id: str, span_id: str, name: str) -> bytes | str | None:
    """A span's (trace id, span id, name) as one key for the retry check: the 24 id bytes of a
    well-formed pair and the name's bytes (as :func:`row_key` makes them), else all three as text
    with a separator; None where either id is empty or all zeros (OTLP's invalid ids, which name no
    span: two different requests' spans with all-zero ids were one "duplicate"). Such a span is not
    checked as a retry (the span handler still refuses a request it has handled).

    The name is in the key so that a span of another kind sent with a good span's ids (a forged
    one, or a client's bug) is not taken for its retry: the spans no row handler reads are checked
    before an export's rows, and such a span made the good ``llm_request`` span beside it a
    "duplicate". An exporter's retry sends the same span again, name and all."""
    if len(trace_id) == 32 and len(span_id) == 16:
        try:
            return row_key(
                bytes.fromhex(trace_id), bytes.fromhex(span_id), name.encode("utf-8", "surrogatepass")
            )
        except ValueError:
            pass
    if not trace_id.strip("0") or not span_id.strip("0"):
        return None
    return f"{trace_id}:{span_id}:{name}"


def row_key(trace_id: bytes, span_id: bytes, name: bytes) -> bytes | str | None:
    """:func:`span_key` of ids and name as received (bytes)."""
    if not any(trace_id) or not any(span_id):  # empty or all zeros
        return None
    if len(trace_id) == 16 and len(span_id) == 8:
        return trace_id + span_id + name
    return f"{trace_id.hex()}:{span_id.hex()}:{name.decode('utf-8', 'surrogatepass')}"


def respond(rejected: Counter[str]) -> trace_service_pb2.ExportTraceServiceResponse:
    """OK, or ``partial_success`` naming how many spans were refused and why."""
    n = sum(rejected.values())
    if not n:
        return trace_service_pb2.ExportTraceServiceResponse()
    why = ", ".join(f"{count} {reason}" for reason, count in sorted(rejected.items()))
    return trace_service_pb2.ExportTraceServiceResponse(
        partial_success=trace_service_pb2.ExportTracePartialSuccess(
            rejected_spans=n, error_message=f"jouletrace refused {n} span(s): {why}"
        )
    )
