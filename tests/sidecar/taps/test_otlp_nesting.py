"""A span nested past protobuf's depth limit, or with 20,000 attributes, costs only itself.

protobuf (upb) refuses a message nested deeper than 100 levels; a ``kvlist_value`` attribute
nested 200 deep (three messages a level) makes it refuse the whole export. Such a value cannot be
built with protobuf's own classes (they refuse it too), so the bad span's extra field is written
here in the wire format and appended to its bytes (a repeated field appended is a field added).
Whichever way the receiver reads the export (the lean decode of ``llm_request`` spans as columns,
or every span whole, as when spans are forwarded), the two good spans beside the bad one are kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from sidecar.taps.otlp import OtlpReceiver
from tests.sidecar.taps.test_otlp_hostile import span
from tests.sidecar.taps.test_otlp_utf8 import ids, rows_receiver, whole_receiver

ATTRIBUTES, EVENTS, LINKS = 9, 11, 13  # Span's field numbers (opentelemetry/proto/trace/v1/trace.proto)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out) + bytes([n])


def field(number: int, data: bytes) -> bytes:
    """A length-delimited field: tag, length, bytes."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def key_value(key: str, any_value: bytes) -> bytes:
    """A ``KeyValue`` message: key (1), value (2: an ``AnyValue``'s bytes)."""
    return field(1, key.encode()) + field(2, any_value)


def kvlist(depth: int) -> bytes:
    """An ``AnyValue`` holding a ``KeyValueList`` (6) of one ``KeyValue`` holding the next, ``depth`` deep."""
    value = field(1, b"x")  # string_value
    for _ in range(depth):
        value = field(6, field(1, key_value("k", value)))
    return value


def array(depth: int) -> bytes:
    """An ``AnyValue`` holding an ``ArrayValue`` (5) of one value holding the next, ``depth`` deep."""
    value = _varint(3 << 3) + _varint(1)  # int_value 1
    for _ in range(depth):
        value = field(5, field(1, value))
    return value


def many_attributes(n: int) -> bytes:
    return b"".join(field(ATTRIBUTES, key_value(f"k{k}", _varint(3 << 3) + _varint(k))) for k in range(n))


EVENT = field(EVENTS, field(2, b"e") + field(3, key_value("k", kvlist(200))))
LINK = field(LINKS, field(1, b"\x01" * 16) + field(2, b"\x01" * 8) + field(4, key_value("k", kvlist(200))))
LEAN, WHOLE = "rows_receiver", "whole_receiver"
BAD = {  # the bytes appended to the bad span, and the receivers that keep it: the lean decode reads
    # only the attributes of its row (not what is nested in them, nor events or links); 20,000 plain
    # attributes are a good span, however wide
    "its request id nested": (field(ATTRIBUTES, key_value("gen_ai.request.id", kvlist(200))), ()),
    "a token count nested": (field(ATTRIBUTES, key_value("gen_ai.usage.prompt_tokens", array(200))), ()),
    "an attribute it does not read nested": (field(ATTRIBUTES, key_value("other", kvlist(50))), (LEAN,)),
    "an event's attribute nested": (EVENT, (LEAN,)),
    "a link's attribute nested": (LINK, (LEAN,)),
    "20,000 attributes": (many_attributes(20_000), (LEAN, WHOLE)),
}


@pytest.mark.parametrize("make", [rows_receiver, whole_receiver])
@pytest.mark.parametrize("what", sorted(BAD))
def test_a_deep_or_wide_span_costs_only_itself(make: Callable[[], OtlpReceiver], what: str) -> None:
    extra, kept_by = BAD[what]
    now = time.time()
    spans = [span(0, now).SerializeToString(), span(1, now).SerializeToString() + extra]
    spans.append(span(2, now).SerializeToString())
    payload = field(1, field(2, b"".join(field(2, s) for s in spans)))  # export > resource > scope > spans
    receiver = make()
    refused = receiver.receive(payload)
    kept = ids(receiver)
    assert {"r0", "r2"} <= set(kept)
    assert receiver.counts["received"] == 3
    if make.__name__ in kept_by:
        assert kept == ["r0", "r1", "r2"] and not refused
    else:
        assert kept == ["r0", "r2"] and sum(refused.values()) == 1
