"""A span request's two attributes as a small read-only mapping: the dict it stands for, to every reader."""

from __future__ import annotations

import json
import sys

import pytest

from sidecar.attribution.events import RequestInfo
from sidecar.attribution.final_records import plain
from sidecar.export.ledger_json import json_text
from sidecar.taps.span_attributes import SpanAttributes

TRACE = bytes(range(16))
AS_DICT = {"vllm.request_id": "chatcmpl-abc", "trace_id": TRACE.hex()}


@pytest.mark.parametrize("trace", [TRACE, TRACE.hex()])
def test_it_reads_as_the_dict_of_its_two_values_the_trace_as_hex(trace: bytes | str) -> None:
    attrs = SpanAttributes("chatcmpl-abc", "abc", trace)
    assert (
        attrs == AS_DICT
        and AS_DICT.__eq__(attrs) is NotImplemented
        and dict(attrs) == AS_DICT
        and {**attrs} == AS_DICT
    )
    assert list(attrs) == list(AS_DICT) and len(attrs) == 2 and "trace_id" in attrs and "x" not in attrs
    assert attrs.get("finish_reason") is None and attrs.keys() <= {*AS_DICT, "finish_reason"}
    assert [attrs.get(k, "-") for k in (*AS_DICT, "work_lost")] == [*AS_DICT.values(), "-"]
    with pytest.raises(KeyError):
        attrs["finish_reason"]
    assert json.loads(json_text({"attributes": dict(attrs)})) == {"attributes": AS_DICT}


def test_an_info_over_one_with_span_attributes_keeps_both_as_dicts_do() -> None:
    """The plugin's info (a dict) over the span's: what the newer names stands, the rest is kept."""
    span = RequestInfo("abc", attributes=SpanAttributes("chatcmpl-abc", "abc", TRACE))
    plugin = RequestInfo(
        "abc", end_s=2.0, attributes={"vllm.request_id": "chatcmpl-abc", "finish_reason": "stop"}
    )
    assert plugin.over(span).attributes == {**AS_DICT, "finish_reason": "stop"}
    assert span.over(plugin).attributes == {**AS_DICT, "finish_reason": "stop"}


def test_it_holds_fewer_bytes_than_the_dict_and_hex_text_it_replaces() -> None:
    attrs = SpanAttributes("chatcmpl-abc", "abc", TRACE)
    assert sys.getsizeof(attrs) < sys.getsizeof(dict(AS_DICT)) + sys.getsizeof(TRACE.hex()) - sys.getsizeof(
        TRACE
    )


@pytest.mark.parametrize(
    ("raw_id", "request_id"),
    [
        ("chatcmpl-abc", "abc"),
        ("cmpl-abc-0", "abc"),
        ("cmpl-abc-3", "abc-3"),
        ("embd-x-0", "x"),
        ("resp_abc_0", "resp_abc"),
        ("resp_abc_2", "resp_abc_2"),
        ("my-own-id", "my-own-id"),
        ("chatcmpl-", "chatcmpl-"),
        ("abc-0", "abc"),  # no prefix, a suffix
        ("chatcmpl-abcabc", "abc"),  # not how ids are named: the id whole
    ],
)
def test_vllms_id_reads_back_as_given_whatever_its_form(raw_id: str, request_id: str) -> None:
    assert SpanAttributes(raw_id, request_id, TRACE)["vllm.request_id"] == raw_id


def test_a_chat_request_holds_no_text_of_its_own_but_its_id() -> None:
    """vLLM's id is made again when read: the request's id between shared constants."""
    request_id = "".join(["abc", "def"])
    attrs = SpanAttributes("chatcmpl-" + request_id, request_id, TRACE)
    assert attrs._id is request_id and attrs._head is SpanAttributes("chatcmpl-x", "x", TRACE)._head


def test_a_record_gets_a_dict_of_its_own_from_either_kind_of_attributes() -> None:
    attrs, given = SpanAttributes("cmpl-abc-0", "abc", "ab" * 16), {"finish_reason": "stop"}
    made = plain(attrs)
    assert type(made) is dict and made == dict(attrs) == {
        "vllm.request_id": "cmpl-abc-0",
        "trace_id": "ab" * 16,
    }
    copied = plain(given)
    assert copied == given and copied is not given
