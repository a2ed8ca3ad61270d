"""Spans decoded as columns read exactly as the full decode reads them, however an attribute is encoded."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sidecar.contracts import span_attributes as d
from sidecar.taps import span_rows
from sidecar.taps.otlp import decode_request
from sidecar.taps.span_rows import decode_rows
from sidecar.taps.vllm_span_format import ROW_SPEC
from sidecar.taps.vllm_span_format import one_row as _one_row
from tests.sidecar.taps.fuzzing import otlp_exports

SPEC = ROW_SPEC.__class__(ROW_SPEC.name, ROW_SPEC.id_key, ROW_SPEC.numeric_keys, (d.SPAN_KIND,))


def _same_as_the_full_decode(payload: bytes) -> None:
    rows, generic = decode_rows(payload, SPEC)
    full = decode_request(ExportTraceServiceRequest.FromString(payload))
    taken = [k for k in range(len(full)) if k not in set(generic)]
    assert sorted(generic + taken) == list(range(len(full))) and len(taken) == len(rows)
    for i, k in enumerate(taken):
        span = full[k]
        assert span.name == SPEC.name and SPEC.id_key in span.attributes
        assert d.SPAN_KIND not in span.attributes
        one = _one_row(span)
        both_nan = rows.ids[i] != rows.ids[i] and one.ids[0] != one.ids[0]  # an id sent as a double NaN
        assert (rows.ids[i] == one.ids[0] or both_nan) and type(rows.ids[i]) is type(one.ids[0])
        assert rows.trace_ids[i].hex() == span.trace_id and rows.span_ids[i].hex() == span.span_id
        assert (rows.start_unix_s[i], rows.end_unix_s[i]) == (span.start_unix_s, span.end_unix_s)
        assert np.array_equal(rows.kinds[i], one.kinds[0])
        assert np.array_equal(rows.values[i], one.values[0], equal_nan=True)
    for k in generic:  # left to the full decode: not a row handler's span
        span = full[k]
        assert span.name != SPEC.name or SPEC.id_key not in span.attributes or d.SPAN_KIND in span.attributes


@settings(max_examples=150, deadline=None)
@given(otlp_exports())
def test_hostile_exports_read_the_same_in_columns(case: tuple[bytes, set[str]]) -> None:
    _same_as_the_full_decode(case[0])


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field by hand: tag, varint length, payload."""
    n, length = len(payload), b""
    while n >= 0x80:
        length, n = length + bytes([n & 0x7F | 0x80]), n >> 7
    return bytes([tag]) + length + bytes([n]) + payload


def _kv(key: bytes, value: bytes) -> bytes:
    """A KeyValue's bytes by hand."""
    return _field(0x0A, key) + _field(0x12, value)


ID, PROMPT, E2E = (k.encode() for k in (SPEC.id_key, SPEC.numeric_keys[0], SPEC.numeric_keys[2]))
ODD = {
    "int as a 10-byte varint": _kv(PROMPT, b"\x18" + b"\xff" * 9 + b"\x01"),
    "a negative int": _kv(PROMPT, b"\x18" + b"\xf9" + b"\xff" * 8 + b"\x01"),
    "two values, the last wins": _kv(PROMPT, b"\x18\x05\x21" + struct.pack("<d", 2.5)),
    "an empty value": _kv(PROMPT, b""),
    "no value": b"\x0a" + bytes([len(PROMPT)]) + PROMPT,
    "a bool": _kv(PROMPT, b"\x10\x01"),
    "an array": _kv(PROMPT, AnyValue(array_value={"values": [AnyValue(int_value=3)]}).SerializeToString()),
    "a mistyped int field": _kv(PROMPT, b"\x19" + b"\x00" * 8),
    "value before key": b"\x12\x02\x18\x07\x0a" + bytes([len(PROMPT)]) + PROMPT,
    "a key given twice": _kv(PROMPT, b"\x18\x07") + b"\x0a\x01x",
    "an id that is an int": _kv(ID, b"\x18\x07"),
    "an id as bytes": _kv(ID, b"\x3a\x03abc"),
    "a NaN": _kv(E2E, b"\x21" + struct.pack("<d", float("nan"))),
    "a long unwanted key": _kv(b"k" * 200, b"\x18\x01"),
    "a long id": _kv(ID, _field(0x0A, b"i" * 300)),
}


@given(st.lists(st.sampled_from(sorted(ODD)), min_size=1, max_size=4), st.booleans())
@settings(max_examples=100, deadline=None)
def test_odd_attribute_encodings_read_as_the_full_decode_reads_them(odd: list[str], repeat: bool) -> None:
    span = Span(trace_id=b"t" * 16, span_id=b"s" * 8, name="llm_request", start_time_unix_nano=10**18)
    base = span.SerializeToString()
    attrs = [_kv(ID, b"\x0a\x03abc"), _kv(PROMPT, b"\x18\x09")] if repeat else [_kv(ID, b"\x0a\x03abc")]
    attrs += [ODD[name] for name in odd]
    body = base + b"".join(_field(0x4A, a) for a in attrs)  # by hand: protobuf would re-encode it plainly
    _same_as_the_full_decode(_field(0x0A, _field(0x12, _field(0x12, body))))


def test_spans_the_otel_sdk_exports_as_vllm_does_are_read_in_columns_without_the_slow_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    attrs = {  # the types vLLM's do_tracing sets: str id, int tokens, float latencies and sampling
        "gen_ai.request.id": "chatcmpl-abc",
        "gen_ai.usage.prompt_tokens": 300,
        "gen_ai.usage.completion_tokens": 40,
        "gen_ai.latency.e2e": 1.25,
        "gen_ai.latency.time_in_model_prefill": 0.1,
        "gen_ai.latency.time_in_model_decode": 1.0,
        "gen_ai.latency.time_in_queue": 0.01,
        "gen_ai.request.top_p": 0.95,
        "gen_ai.request.max_tokens": 512,
    }
    with provider.get_tracer("vllm.tracing.otel").start_as_current_span("llm_request", attributes=attrs):
        pass
    payload = encode_spans(exporter.get_finished_spans()).SerializeToString()  # the OTLP exporter's bytes
    monkeypatch.setattr(span_rows, "_slow_row", None)  # the SDK encodes plainly: never read one by one
    rows, generic = decode_rows(payload, SPEC)
    assert generic == [] and rows.ids == ["chatcmpl-abc"]
    assert rows.values.tolist() == [[300.0, 40.0, 1.25, 0.1, 1.0]] and rows.kinds.tolist() == [[1] * 5]


def test_an_export_of_many_spans_with_some_id_less_ones_keeps_each_span_once_in_order() -> None:
    """Spans without the id attribute among thousands (a forged export): each goes to the full
    decode once, in its place; the rest are columns (the positions were found with a set of the
    kept spans made once per export, not once per span: 40,000 spans took 19 s that way)."""
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for i in range(6_000):
        span = spans.add(
            trace_id=i.to_bytes(16, "big"),
            span_id=(i + 1).to_bytes(8, "big"),
            name=SPEC.name,
            start_time_unix_nano=10**18,
            end_time_unix_nano=10**18 + 1000,
        )
        if i % 1000:  # every 1000th span has no id
            kv = span.attributes.add(key=SPEC.id_key)
            kv.value.string_value = f"req-{i}"
    rows, generic = decode_rows(request.SerializeToString(), SPEC)
    assert generic == [0, 1000, 2000, 3000, 4000, 5000]
    assert rows.ids == [f"req-{i}" for i in range(6_000) if i % 1000]


@pytest.mark.parametrize("last", [b"", b"\x0a\x11gen_ai", b"\x0a\x05", b"\x0a"])
def test_an_odd_attribute_last_in_the_export_reads_as_the_full_decode_reads_it(last: bytes) -> None:
    """An empty KeyValue (valid protobuf) last in an export made the column reader compare a key
    past the end of the buffer: IndexError, and the export was refused whole, its good spans too."""
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for i in range(2):
        span = spans.add(trace_id=bytes(15) + bytes([i + 1]), span_id=bytes(7) + b"\x01", name=SPEC.name)
        span.attributes.add(key=SPEC.id_key).value.string_value = f"req-{i}"
        span.attributes.add(key="x.n").value.int_value = 17
    lean = span_rows.LeanExport.FromString(request.SerializeToString())
    lean.resource_spans[0].scope_spans[0].spans[1].attributes.append(last)
    payload = lean.SerializeToString()
    if last:  # not a KeyValue protobuf reads: the full decode refuses that span, the rows agree
        rows, _ = decode_rows(payload, SPEC)
        assert rows.ids[0] == "req-0"
        return
    _same_as_the_full_decode(payload)
    rows, generic = decode_rows(payload, SPEC)
    assert rows.ids == ["req-0", "req-1"] and generic == []
