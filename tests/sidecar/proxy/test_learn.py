"""Request learning: hostile fields rejected and counted, never costing the request."""

from __future__ import annotations

import json

import pytest

from sidecar.proxy.learn import Counts, clean_label, clean_traceparent, inspect_body, usage_tokens

CHAT = "/v1/chat/completions"


def _body(**fields: object) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}], **fields}).encode()


def test_a_stream_without_usage_gets_include_usage_and_keeps_its_other_options() -> None:
    facts = inspect_body(CHAT, _body(stream=True, stream_options={"x": 1}, user="acme"), Counts())
    sent = json.loads(facts.body)
    assert facts.asked_usage and sent["stream_options"] == {"x": 1, "include_usage": True}
    assert (facts.model, facts.user, facts.stream, facts.prompt_chars) == ("m", "acme", True, 5)


@pytest.mark.parametrize(
    "body",
    [_body(stream=True, stream_options={"include_usage": True}), _body(stream=False), _body()],
)
def test_a_body_that_needs_nothing_is_sent_byte_for_byte(body: bytes) -> None:
    facts = inspect_body(CHAT, body, Counts())
    assert facts.body == body and not facts.asked_usage


@pytest.mark.parametrize(
    ("stream", "streamed"),
    [("true", True), ("Yes", True), (1, True), ("false", False), (0, False), ("x", False), (None, False)],
)
def test_stream_is_read_as_the_engines_pydantic_reads_it(stream: object, streamed: bool) -> None:
    """Adversarial probe: ``"stream": "true"`` streams on vLLM (pydantic's lax bool) but was read as
    not streamed: no usage asked for, the exact counts lost and the work one prefill."""
    facts = inspect_body(CHAT, _body(stream=stream), Counts())
    assert facts.stream is streamed and facts.asked_usage is streamed


def test_include_usage_the_engine_reads_as_true_is_the_clients_own_not_asked_for_again() -> None:
    facts = inspect_body(CHAT, _body(stream=True, stream_options={"include_usage": "true"}), Counts())
    assert facts.stream and not facts.asked_usage  # its usage chunk is the client's: not stripped


@pytest.mark.parametrize("body", [b"{not json", b"[1,2]", b"\xff\xfe", b'"text"'])
def test_an_unreadable_body_is_passed_on_unchanged_and_counted(body: bytes) -> None:
    counts = Counts()
    facts = inspect_body(CHAT, body, counts)
    assert facts.body == body and facts.model is None and counts.counts() == {"body": 1}


def test_a_body_deeper_than_json_reads_is_passed_on_unchanged_and_counted() -> None:
    """orjson reads 1,024 levels, :mod:`json` (which re-encodes it) about 1,000: it was a bare 500."""
    deep = b'{"model":"m","stream":true,"stream_options":{},"x":' + b"[" * 1010 + b"]" * 1010 + b"}"
    counts = Counts()
    facts = inspect_body(CHAT, deep, counts)
    assert facts.body == deep and facts.stream and not facts.asked_usage and counts.counts() == {"body": 1}


def test_other_paths_are_not_read() -> None:
    assert inspect_body("/v1/embeddings", b"{not json", Counts()).body == b"{not json"


@pytest.mark.parametrize("bad", [123, "x" * 200, "has space", "new\nline", ["list"], float("nan")])
def test_labels_that_are_not_short_printable_strings_are_rejected_and_counted(bad: object) -> None:
    counts = Counts()
    assert clean_label(bad, "user", counts) is None and counts.counts() == {"user": 1}


def test_a_malformed_traceparent_is_not_learned() -> None:
    counts = Counts()
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert clean_traceparent(good, counts) == good
    assert clean_traceparent("00-zz-1-01", counts) is None and counts.counts() == {"traceparent": 1}


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": float("nan"), "completion_tokens": 1},
        {"prompt_tokens": 1e12, "completion_tokens": 1},
        {"prompt_tokens": -1, "completion_tokens": 1},
        {"prompt_tokens": "3", "completion_tokens": 1},
        {"prompt_tokens": True, "completion_tokens": 1},
        {"prompt_tokens": 2.5, "completion_tokens": 1},
        {"completion_tokens": 1},
        "usage",
    ],
)
def test_insane_usage_is_ignored_and_counted(usage: object) -> None:
    counts = Counts()
    assert usage_tokens(usage, counts) is None and counts.counts() == {"usage": 1}


def test_sane_usage_is_read() -> None:
    assert usage_tokens({"prompt_tokens": 12, "completion_tokens": 5.0, "total_tokens": 17}, Counts()) == (
        12,
        5,
    )


def test_a_stream_without_stream_options_keeps_its_bytes_with_the_option_added() -> None:
    body = _body(stream=True, temperature=0.5) + b" \n"
    facts = inspect_body(CHAT, body, Counts())
    assert facts.asked_usage and facts.body.startswith(body.rstrip()[:-1])
    assert json.loads(facts.body) == {**json.loads(body), "stream_options": {"include_usage": True}}


def test_a_re_encoded_body_keeps_an_integer_over_64_bits() -> None:
    body = _body(stream=True, stream_options={"x": 1}, seed=2**70)
    sent = json.loads(inspect_body(CHAT, body, Counts()).body)
    assert sent["seed"] == 2**70 and sent["stream_options"] == {"x": 1, "include_usage": True}


def test_a_body_nested_too_deep_is_passed_on_unchanged_and_counted() -> None:
    body = b'{"a":' * 200_000 + b"1" + b"}" * 200_000
    counts = Counts()
    assert inspect_body(CHAT, body, counts).body == body and counts.counts() == {"body": 1}
