"""Protobuf ``KeyValue`` messages (OTLP attributes) read for many at once with NumPy.

upb parses an export fast, but every field read from Python then costs ~0.2 us,
and a vLLM span has ~13 attributes of which the sidecar reads six. Here all the
attributes of an export (each ``KeyValue``'s bytes as upb cut it out, joined)
are read together: key offset and length, the ``AnyValue``'s one field's tag and
extent. One that is not plain (``0x0A key 0x12 AnyValue`` with the AnyValue a
single field of a known kind ending the KeyValue: anything else, e.g. a field
given twice, a long varint where a short one is usual, an empty value) is only
flagged: the caller reads it the exact way, with protobuf itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Attrs", "attributes", "double_at", "varint_at"]

_LEN, _I64, _VARINT, _I32 = 2, 1, 0, 5
PLAIN_TAGS = (0x0A, 0x10, 0x18, 0x21, 0x2A, 0x32, 0x3A)  # AnyValue: string bool int double array kvlist bytes


def _varints(
    buf: np.ndarray, at: np.ndarray, end: np.ndarray, want: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value, the offset after it, ok) of the varint at each ``at`` (ok: it ends before ``end``);
    with ``want``, only where it is true (elsewhere: ``at``, not ok). Values as int64 (two's complement,
    as protobuf reads an int64 and truncates a varint over 64 bits)."""
    top = buf.size - 1
    first = buf[np.minimum(at, top)].astype(np.int64)
    inside = at < end if want is None else (at < end) & want
    done = inside & (first < 0x80)
    value = first & 0x7F
    pos = at + 1
    rest = np.flatnonzero(inside & (first >= 0x80))
    if rest.size:  # multi-byte varints (tags over field 15, lengths over 127): the few that need it
        v, p, d = value[rest].astype(np.uint64), pos[rest], np.zeros(rest.size, dtype=bool)
        e = end[rest]
        for j in range(1, 10):
            live = ~d & (p < e)
            if not live.any():
                break
            b = buf[np.minimum(p, top)].astype(np.uint64)
            v |= np.where(live, (b & np.uint64(0x7F)) << np.uint64(7 * j), np.uint64(0))
            p = np.where(live, p + 1, p)
            d |= live & (b < 0x80)
        value[rest], pos[rest], done[rest] = v.view(np.int64), p, d
    return value, np.where(done, pos, at), done


def _fixed64(buf: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The little-endian 8-byte values at each ``at`` (in bounds: checked by the caller)."""
    if not at.size:
        return np.zeros(0, dtype=np.uint64)
    return np.ascontiguousarray(buf[at[:, None] + np.arange(8)]).view("<u8").reshape(-1)


@dataclass
class Attrs:
    """Per attribute: its key (offset, length), its value's tag and extent, and whether it is plain:
    ``0x0A key 0x12 AnyValue`` and the AnyValue one field that ends the KeyValue."""

    key_at: np.ndarray
    key_len: np.ndarray
    tag: np.ndarray  # the AnyValue field's tag byte (0x0A string, 0x10 bool, 0x18 int, 0x21 double, ...)
    value_at: np.ndarray  # the field's payload (a string's bytes, an int's varint, a double's 8 bytes)
    value_end: np.ndarray
    plain: np.ndarray


def attributes(buf: np.ndarray, at: np.ndarray, end: np.ndarray) -> Attrs:
    """Read the ``KeyValue`` messages ``buf[at[i]:end[i]]`` (flag those that are not plain)."""
    top = buf.size - 1
    plain = (end - at >= 2) & (buf[np.minimum(at, top)] == 0x0A)
    key_len, key_at, ok = _varints(buf, at + 1, end)
    plain &= ok & (key_len >= 0)
    p = key_at + np.clip(key_len, 0, 1 << 40)
    plain &= (p < end) & (buf[np.clip(p, 0, top)] == 0x12)
    value_len, any_at, ok = _varints(buf, p + 1, end)
    plain &= ok & (value_len > 0) & (any_at + np.clip(value_len, 0, 1 << 40) == end)
    tag = buf[np.clip(any_at, 0, top)].astype(np.int64)
    wire = tag & 7
    inner, inner_at, ok = _varints(buf, any_at + 1, end, wire != _I64)  # a LEN's length, or a VARINT value
    value_end = np.where(
        wire == _LEN, inner_at + np.clip(inner, -1, 1 << 40), np.where(wire == _VARINT, inner_at, any_at + 9)
    )
    plain &= (ok | (wire == _I64)) & (value_end == end) & np.isin(tag, PLAIN_TAGS)
    value_at = np.where(wire == _LEN, inner_at, any_at + 1)
    return Attrs(key_at, key_len, tag, value_at, value_end, plain)


def varint_at(buf: np.ndarray, at: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The varints at ``at`` as int64 (two's complement, as protobuf reads an int64)."""
    value, _, _ = _varints(buf, at, end)
    return value


def double_at(buf: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The little-endian doubles at ``at``."""
    return _fixed64(buf, at).view("<f8")
