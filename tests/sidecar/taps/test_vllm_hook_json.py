"""The hook receiver reads a datagram's JSON (orjson where it agrees) exactly as ``json.loads`` would."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.taps.json_read import loads_like_json
from tests.sidecar.taps.fuzzing import datagram_bytes, hostile

_values = st.recursive(
    st.one_of(hostile, st.integers(0, 2**53), st.floats(0.0, 86_400.0), st.text()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=6), inner, max_size=6)
    ),
    max_leaves=40,
)


_REFUSED = (UnicodeDecodeError, json.JSONDecodeError, RecursionError)  # the receiver counts: malformed


def _same(data: bytes) -> None:
    """Both give the same value (repr: 1, 1.0 and True differ; NaN equals itself) or both refuse it."""
    try:
        expected: Any = repr(json.loads(data))
    except _REFUSED:  # which one json raises for deep nesting depends on the stack depth it is called at
        with pytest.raises(_REFUSED):
            loads_like_json(data)
        return
    assert repr(loads_like_json(data)) == expected


@settings(max_examples=400, deadline=None)
@given(value=_values)
def test_any_json_value_reads_as_json_reads_it(value: Any) -> None:
    _same(json.dumps(value).encode())  # NaN, Infinity and integers of any size included


@settings(max_examples=300, deadline=None)
@given(data=datagram_bytes)
def test_any_bytes_read_or_are_refused_as_json_does(data: bytes) -> None:
    _same(data)


@pytest.mark.parametrize(
    "data",
    [
        b"[18446744073709551616, -9223372036854775809, 123456789012345678901234]",
        b"[1e400, -1e400, 0.1000000000000000055511151231257827]",
        b'{"a": 1, "a": 2.0}',
        b'"\\ud800"',
        b"\xef\xbb\xbf[1]",
        "[1]".encode("utf-16"),
        b"[NaN, Infinity, -Infinity]",
        b"[true, false, null, -0, 1E2]",
    ],
)
def test_what_orjson_refuses_or_reads_otherwise_is_left_to_json(data: bytes) -> None:
    _same(data)
