"""One OTLP export -> columns of the spans a row handler reads, without building every attribute.

A vLLM ``llm_request`` span carries ~13 attributes; the vLLM handler reads six.
Decoding every span into Python objects (a dict of every attribute, each value
through ``AnyValue.WhichOneof``) cost ~20 us a span, ten times the gRPC receive
and protobuf parse. Here upb parses the export against a *lean* schema
(:data:`LeanExport`: the field numbers of ``ExportTraceServiceRequest`` down to a
span's ids, name, times and attributes, each attribute left as its ``KeyValue``
bytes; the rest kept as unknown fields, unread), and the attributes of all the
export's spans of the spec's name are read at once (:mod:`.span_wire`): keys
matched against the wanted ones, only those values read (int64, double, string).
A span with an attribute that is not plainly encoded, or a wanted key twice, is
read again with protobuf's own ``KeyValue`` (the last of a repeated key wins,
as in a dict), so every span reads as the full decode reads it.

A span goes to the columns (:class:`~sidecar.taps.spans.SpanRows`) when its name
is the spec's and it has the id attribute; any other span, or one with an
``escape`` key (an attribute by which a handler before the row handler claims
spans), is left to the full decode (``generic``: its position among the
export's spans). Numeric values are kept as float64 with a kind (0 absent, 1 a
number, 2 not a number); an int64 always fits a float, so nothing overflows.
Every string of the lean schema is read as bytes, so invalid UTF-8 never fails the
lean parse: a span whose id is not UTF-8 (or whose attributes protobuf cannot
read one by one) is left to the full decode too, which refuses that span alone
(:func:`~sidecar.taps.otlp_decode.decode_export`); attributes not read are not
checked. The resource and scope are kept as their bytes, for that decode.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import (  # type: ignore[import-untyped]
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from sidecar.taps import span_wire as wire
from sidecar.taps.spans import AttrValue, SpanRows, attr_value

__all__ = ["LeanExport", "RowSpec", "count_spans", "decode_rows", "span_count"]

_NUMBER, _NOT_A_NUMBER = 1, 2  # a numeric column's kinds (0: absent), as in validate


@dataclass(frozen=True, slots=True)
class RowSpec:
    """Which spans a row handler takes as columns: their name, the id attribute, numeric attributes;
    ``escape``: attributes that send a span to the full decode instead (another handler's keys)."""

    name: str
    id_key: str
    numeric_keys: tuple[str, ...]
    escape: tuple[str, ...] = ()


def _lean_schema() -> Any:
    """``ExportTraceServiceRequest`` cut down to what :func:`decode_rows` reads (same field numbers)."""
    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="jouletrace_lean_otlp.proto", package="jtlean", syntax="proto3"
    )
    layout = {
        "Export": [("resource_spans", 1, f.TYPE_MESSAGE, ".jtlean.ResourceSpans")],
        "ResourceSpans": [
            ("resource", 1, f.TYPE_BYTES, ""),
            ("scope_spans", 2, f.TYPE_MESSAGE, ".jtlean.ScopeSpans"),
        ],
        "ScopeSpans": [("scope", 1, f.TYPE_BYTES, ""), ("spans", 2, f.TYPE_MESSAGE, ".jtlean.Span")],
        "Span": [
            ("trace_id", 1, f.TYPE_BYTES, ""),
            ("span_id", 2, f.TYPE_BYTES, ""),
            ("name", 5, f.TYPE_BYTES, ""),  # bytes: invalid UTF-8 is the full decode's to refuse
            ("start_time_unix_nano", 7, f.TYPE_FIXED64, ""),
            ("end_time_unix_nano", 8, f.TYPE_FIXED64, ""),
            ("attributes", 9, f.TYPE_BYTES, ""),
        ],
    }
    repeated = {"resource_spans", "scope_spans", "spans", "attributes"}
    for name, fields in layout.items():
        message = fdp.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            label = f.LABEL_REPEATED if field_name in repeated else f.LABEL_OPTIONAL
            field = message.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    cls: Any = message_factory.GetMessageClass(pool.FindMessageTypeByName("jtlean.Export"))
    return cls


LeanExport = _lean_schema()


_ID, _ESCAPE, _NONE = -1, -2, -9  # columns that are not numeric: the id, an escape key, not wanted


class _Keys:
    """The wanted keys (encoded) with their column, and by name."""

    def __init__(self, spec: RowSpec) -> None:
        wanted = [(spec.id_key, _ID), *((k, i) for i, k in enumerate(spec.numeric_keys))]
        wanted += [(k, _ESCAPE) for k in spec.escape]
        self.wanted = [(k.encode(), c) for k, c in wanted]
        self.by_key = dict(wanted)


@functools.lru_cache(maxsize=8)
def _keys(spec: RowSpec) -> _Keys:
    return _Keys(spec)


def count_spans(payload: bytes) -> int:
    """The number of spans in an export, read by the lean schema without making a Python object per
    span (upb parses in C; only the resource and scope wrappers are built)."""
    return span_count(LeanExport.FromString(payload))


def span_count(export: Any) -> int:
    """The number of spans in a parsed export (lean or full: the same fields)."""
    return sum(len(ss.spans) for rs in export.resource_spans for ss in rs.scope_spans)


def decode_rows(payload: bytes, spec: RowSpec, lean: Any = None) -> tuple[SpanRows, list[int]]:
    """The export's spans of ``spec.name`` as columns, and the positions of every other span
    (``lean``: the payload already parsed as :data:`LeanExport`)."""
    trace_ids: list[bytes] = []
    span_ids: list[bytes] = []
    times: list[int] = []
    chunks: list[bytes] = []  # every attribute of the named spans, in order
    counts: list[int] = []
    named: list[int] = []
    generic: list[int] = []
    k = -1
    name = spec.name.encode()
    for rs in (LeanExport.FromString(payload) if lean is None else lean).resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                k += 1
                if s.name != name:
                    generic.append(k)
                    continue
                attributes = s.attributes
                named.append(k)
                trace_ids.append(s.trace_id)
                span_ids.append(s.span_id)
                times += (s.start_time_unix_nano, s.end_time_unix_nano)
                chunks += attributes
                counts.append(len(attributes))
    n = len(named)
    rid, values, kinds, escaped = _read_attributes(chunks, counts, spec)
    keep = [i for i in range(n) if rid[i] is not None and not escaped[i]]
    if len(keep) < n:
        kept = set(keep)  # once: a set per span made an export with one id-less span cost n x n
        generic = sorted(generic + [named[i] for i in range(n) if i not in kept])
    t = np.array(times, dtype=np.uint64).reshape(-1, 2)[keep] / 1e9
    rows = SpanRows(
        [trace_ids[i] for i in keep] if len(keep) < n else trace_ids,
        [span_ids[i] for i in keep] if len(keep) < n else span_ids,
        t[:, 0].copy(),
        t[:, 1].copy(),
        [r for r in (rid[i] for i in keep) if r is not None],
        values[keep],
        kinds[keep],
    )
    return rows, generic


def _read_attributes(
    chunks: list[bytes], counts: list[int], spec: RowSpec
) -> tuple[list[AttrValue | None], np.ndarray, np.ndarray, np.ndarray]:
    """Per span (``counts[i]`` attributes each, in ``chunks``): its id (None: absent), numeric values
    and kinds, and whether it has an escape key. All attributes read at once; a span with an
    attribute that is not plain, or a wanted key twice, is read again one attribute at a time."""
    n, width = len(counts), len(spec.numeric_keys)
    lengths = np.fromiter(map(len, chunks), dtype=np.int64, count=len(chunks))
    end = np.cumsum(lengths)
    at = end - lengths
    joined = b"".join(chunks)
    buf = np.frombuffer(joined, dtype=np.uint8) if joined else np.zeros(1, dtype=np.uint8)
    owner = np.repeat(np.arange(n), counts)
    attrs = wire.attributes(buf, at, end)
    keys = _keys(spec)
    col = np.full(owner.size, _NONE, dtype=np.int64)
    for key, c in keys.wanted:
        col[_equals_at(buf, attrs.key_at, attrs.key_len, key, attrs.plain)] = c
    slow = np.zeros(n, dtype=bool)  # spans read again, one attribute at a time (exactly)
    slow[owner[~attrs.plain]] = True
    slow[owner[(col == _ID) & (attrs.tag != 0x0A)]] = True
    hit = col != _NONE
    pairs = owner[hit] * (width + 3) + col[hit] + 2
    uniq, repeats = np.unique(pairs, return_counts=True)
    slow[uniq[repeats > 1] // (width + 3)] = True  # a wanted key twice: the last wins, as in a dict
    escaped = np.zeros(n, dtype=bool)
    escaped[owner[col == _ESCAPE]] = True
    values = np.zeros((n, width))
    kinds = np.zeros((n, width), dtype=np.int8)
    _numbers(buf, attrs, hit & (col >= 0), owner, col, values, kinds)
    rid: list[AttrValue | None] = [None] * n
    id_at = np.flatnonzero((col == _ID) & (attrs.tag == 0x0A))  # strings; other ids go the exact way
    for i, a, b in zip(
        owner[id_at].tolist(), attrs.value_at[id_at].tolist(), attrs.value_end[id_at].tolist(), strict=True
    ):
        try:
            rid[i] = joined[a:b].decode()
        except UnicodeDecodeError:  # not UTF-8: left without an id, to the full decode, which refuses it
            escaped[i] = True
    first = np.cumsum(counts) - np.asarray(counts, dtype=np.int64) if n else np.zeros(0, dtype=np.int64)
    for i in np.flatnonzero(slow).tolist():
        lo = int(first[i])
        try:
            rid[i], values[i], kinds[i], escaped[i] = _slow_row(chunks[lo : lo + counts[i]], keys, width)
        except DecodeError:  # an attribute protobuf cannot read (invalid UTF-8): to the full decode
            rid[i], escaped[i] = None, True
    return rid, values, kinds, escaped


def _equals_at(
    buf: np.ndarray, at: np.ndarray, length: np.ndarray, text: bytes, plain: np.ndarray
) -> np.ndarray:
    """Which of the plain attributes' keys (``length`` bytes at ``at``) are ``text``. Only plain ones
    are compared: another's offsets may point past the buffer (an empty ``KeyValue`` last in an
    export made the comparison read past it, and the export was refused whole, its good spans too)."""
    out = plain & (length == len(text)) & (at + len(text) <= buf.size)
    cand = np.flatnonzero(out)
    if cand.size and text:
        want = np.frombuffer(text, dtype=np.uint8)
        out[cand] = np.all(buf[at[cand][:, None] + np.arange(len(text))] == want, axis=1)
    found: np.ndarray = out
    return found


def _numbers(
    buf: np.ndarray,
    attrs: wire.Attrs,
    num: np.ndarray,
    a_span: np.ndarray,
    col: np.ndarray,
    values: np.ndarray,
    kinds: np.ndarray,
) -> None:
    """The numeric attributes' values (int64 or double) and kinds, into ``values`` and ``kinds``."""
    is_int = num & (attrs.tag == 0x18)
    is_double = num & (attrs.tag == 0x21)
    other = num & ~is_int & ~is_double
    values[a_span[is_int], col[is_int]] = wire.varint_at(buf, attrs.value_at[is_int], attrs.value_end[is_int])
    values[a_span[is_double], col[is_double]] = wire.double_at(buf, attrs.value_at[is_double])
    kinds[a_span[is_int | is_double], col[is_int | is_double]] = _NUMBER
    values[a_span[other], col[other]] = 0.0
    kinds[a_span[other], col[other]] = _NOT_A_NUMBER


def _slow_row(
    attributes: list[bytes], keys: _Keys, width: int
) -> tuple[AttrValue | None, np.ndarray, np.ndarray, bool]:
    """One span's attributes read one by one (the exact way): id, values, kinds, escaped."""
    row, kind = np.zeros(width), np.zeros(width, dtype=np.int8)
    rid: AttrValue | None = None
    for a in attributes:
        kv = KeyValue.FromString(a)  # exactly as the full decode reads it
        c = keys.by_key.get(kv.key, _NONE)
        if c == _NONE:
            continue
        value = attr_value(kv.value)
        if c == _ESCAPE:
            return None, row, kind, True
        if c == _ID:
            rid = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            row[c], kind[c] = float(value), _NUMBER
        else:
            row[c], kind[c] = 0.0, _NOT_A_NUMBER
    return rid, row, kind, False
