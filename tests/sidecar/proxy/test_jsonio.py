"""JSON in and out of the proxy: a spliced member reads as an added key; what only json reads, json reads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.proxy import jsonio

_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
_JSON = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
_OBJECTS = st.dictionaries(st.text(max_size=8).filter(lambda k: k != "added"), _JSON, max_size=5)
_SPELLINGS = st.sampled_from([{}, {"separators": (",", ":")}, {"indent": 2}, {"ensure_ascii": False}])


@settings(max_examples=300, deadline=None)
@given(_OBJECTS, _SPELLINGS, st.sampled_from(["", " ", "\n", " \r\n\t"]), _JSON)
def test_a_spliced_member_reads_as_the_object_with_that_key_added(
    doc: dict[str, Any], spelling: dict[str, Any], trailing: str, value: Any
) -> None:
    raw = (json.dumps(doc, **spelling) + trailing).encode()
    got = jsonio.with_member(raw, "added", value)
    assert json.loads(got) == {**doc, "added": json.loads(json.dumps(value))}
    assert list(json.loads(got))[-1] == "added"
    assert got.startswith(raw.rstrip()[:-1].rstrip())  # every byte before it is the sender's


def test_only_an_object_takes_a_member_and_a_value_that_is_no_json_number_is_null() -> None:
    with pytest.raises(ValueError):
        jsonio.with_member(b"[1]", "a", 1)
    assert json.loads(jsonio.with_member(b"{}", "a", [float("nan"), float("inf")])) == {"a": [None, None]}


@pytest.mark.parametrize(
    ("raw", "value", "strict"),
    [
        (b'{"a": 1}', {"a": 1}, True),
        (b'{"a": NaN}', None, False),  # json's extension: read by json
        (b'{"a": "\\ud800"}', {"a": "\ud800"}, False),  # a lone surrogate escape: json reads it
        (json.dumps({"a": 1}).encode("utf-16"), {"a": 1}, False),  # json detects UTF-16
    ],
)
def test_what_orjson_refuses_json_still_reads(raw: bytes, value: Any, strict: bool) -> None:
    got, was_strict = jsonio.read(raw)
    assert was_strict == strict
    if value is not None:
        assert got == value


def test_an_integer_over_64_bits_survives_a_re_encode() -> None:
    big = 2**70
    assert jsonio.dumps(jsonio.loads_exact(b'{"n": %d}' % big)) == b'{"n":%d}' % big
    with pytest.raises(ValueError):
        jsonio.read(b"{oops")


def test_json_nested_too_deep_for_either_is_a_value_error_not_a_crash() -> None:
    deep = b'{"a":' * 200_000 + b"1" + b"}" * 200_000
    with pytest.raises(ValueError):
        jsonio.read(deep)


@pytest.mark.parametrize("strict", [True, False])
def test_a_document_too_deep_to_re_encode_is_a_value_error_not_a_recursion_error(strict: bool) -> None:
    raw = b'{"energy":1,"deep":' + b"[" * 1_000 + b"]" * 1_000 + b"}"
    doc = {"energy": 1, "deep": []} if strict else _deep_list(1_000)
    with pytest.raises(ValueError, match="too deep"):
        jsonio.set_member(raw, doc, strict, "energy", {"joules": 1.0})


def _deep_list(depth: int) -> dict[str, Any]:
    """What json read of a deep document, built without recursion."""
    inner: list[Any] = []
    for _ in range(depth - 1):
        inner = [inner]
    return {"energy": 1, "deep": inner}
