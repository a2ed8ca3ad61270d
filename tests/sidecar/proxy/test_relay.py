"""The stream relay: chunks read by their bytes agree with decoded ones; usage decoded, energy added."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.proxy.learn import Counts, RequestTrace
from sidecar.proxy.relay import CONTENT, StreamRelay, is_content_chunk, needs_decoding
from sidecar.proxy.sse import SseFramer

_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.just(""),
    st.text(max_size=12),
    st.just('he said "content": "x" and {"text": "y"}'),  # keys inside a value are escaped
    st.just([]),
    st.just([{}]),
    st.just([{"index": 0, "function": {"name": "f", "arguments": ""}}]),
    st.just({}),
    st.just({"name": "f"}),
)
_KEYS = ("role", "content", "reasoning_content", "tool_calls", "function_call", "refusal")
_DELTA = st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=4)
_LOGPROBS = st.one_of(st.none(), st.just({"content": [{"token": "w", "logprob": -0.1}]}))
_CHOICE = st.one_of(
    st.fixed_dictionaries({"index": st.just(0), "delta": _DELTA, "logprobs": _LOGPROBS}),
    st.fixed_dictionaries({"index": st.just(0), "text": st.one_of(st.just(""), st.text(max_size=8))}),
    st.fixed_dictionaries({"index": st.just(0), "delta": _DELTA, "finish_reason": st.just("stop")}),
)
_CHUNK = st.fixed_dictionaries(
    {"id": st.just("chatcmpl-1"), "choices": st.lists(_CHOICE, max_size=2)},
    optional={"model": st.just("m"), "usage": st.none(), "object": st.just("chat.completion.chunk")},
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_CHUNK, st.sampled_from([(",", ":"), (", ", ": ")]), st.booleans())
def test_the_byte_pattern_reads_a_chunk_as_decoding_it_would(
    doc: dict[str, Any], separators: tuple[str, str], ascii_only: bool
) -> None:
    data = json.dumps(doc, separators=separators, ensure_ascii=ascii_only).encode()
    if needs_decoding(data, model_known=True):  # logprobs: decoded, as any chunk would be
        assert any(c.get("logprobs") is not None for c in doc["choices"])
        return
    assert bool(CONTENT.search(data)) == is_content_chunk(doc), data


def test_what_the_fast_path_leaves_to_decoding() -> None:
    assert needs_decoding(b'{"model":"m","choices":[]}', model_known=False)
    assert not needs_decoding(b'{"model":"m","choices":[]}', model_known=True)
    assert needs_decoding(b'{"choices":[],"usage":{"prompt_tokens":1}}', model_known=True)
    assert not needs_decoding(b'{"choices":[],"usage": null, "logprobs":null}', model_known=True)
    assert needs_decoding(b'{"choices":[{"logprobs":{"content":[]}}]}', model_known=True)
    assert needs_decoding(b"[DONE]", model_known=True) and needs_decoding(b"{oops", model_known=True)


def _relay(stream: bytes, strip_usage: bool) -> tuple[bytes, RequestTrace, Counts]:
    trace = RequestTrace("r", 0.0, "/v1/chat/completions", stream=True)
    counts = Counts()
    ticks = iter(range(1, 1000))
    relay = StreamRelay(
        trace,
        strip_usage=strip_usage,
        clock=lambda: float(next(ticks)),
        in_flight=lambda: 2,
        energy=lambda t: {"joules": 1.5, "final": False},
        counts=counts,
    )
    framer = SseFramer()
    out = b"".join(relay.relay(e) for piece in (stream[:50], stream[50:]) for e in framer.feed(piece))
    return out + b"".join(relay.relay(e) for e in framer.close()), trace, counts


def _sse(doc: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


STREAM = (
    _sse({"model": "tiny", "choices": [{"delta": {"role": "assistant", "content": ""}}], "usage": None})
    + b"".join(
        _sse({"model": "tiny", "choices": [{"delta": {"content": "w"}}], "usage": None}) for _ in range(3)
    )
    + _sse({"model": "tiny", "choices": [{"delta": {}, "finish_reason": "stop"}], "usage": None})
    + _sse({"model": "tiny", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
    + b"data: [DONE]\n\n"
)


def test_a_stream_is_timed_per_content_chunk_and_its_usage_carries_energy() -> None:
    out, trace, counts = _relay(STREAM, strip_usage=False)
    assert len(trace.chunk_s) == 3 and trace.usage == (7, 3) and trace.response_model == "tiny"
    assert trace.shared_steps == 1.5 and counts.counts() == {}
    *kept, usage, done = out.split(b"\n\n")[:-1]
    assert b"\n\n".join(kept) + b"\n\n" == STREAM[: len(b"\n\n".join(kept)) + 2]  # unchanged bytes
    assert json.loads(usage[6:])["energy"] == {"joules": 1.5, "final": False} and done == b"data: [DONE]"


def test_the_usage_chunk_the_proxy_asked_for_is_dropped() -> None:
    out, trace, _ = _relay(STREAM, strip_usage=True)
    assert b'"usage": {' not in out and out.endswith(b"data: [DONE]\n\n") and trace.usage == (7, 3)


def test_a_bad_model_name_is_counted_once_a_stream_not_once_a_chunk() -> None:
    stream = STREAM.replace(b'"tiny"', b'"bad model!"')
    _, trace, counts = _relay(stream, strip_usage=False)
    assert trace.response_model is None and counts.counts() == {"response_model": 1}
    assert len(trace.chunk_s) == 3


def test_the_energy_is_spliced_into_the_usage_chunk_as_sent() -> None:
    usage = b'data: {"id": "x", "choices": [{"delta": {}}], '
    usage += b'"usage": {"prompt_tokens": 7, "completion_tokens": 3}}'
    out, trace, _ = _relay(usage + b"\n\n", strip_usage=True)
    assert out == usage[:-1] + b',"energy":{"joules":1.5,"final":false}}\n\n' and trace.usage == (7, 3)


def test_a_usage_chunk_orjson_refuses_or_spread_over_lines_is_re_encoded_whole() -> None:
    tokens = {"prompt_tokens": 7, "completion_tokens": 3}
    odd = _sse({"choices": [{"delta": {}}], "usage": tokens, "t": 2**70})
    odd = odd.replace(b"}}\n\n", b'}, "x": NaN}\n\n')  # json reads NaN, orjson does not
    lines = b'data: {"choices": [{"delta": {}}],\n'
    lines += b'data: "usage": {"prompt_tokens": 1, "completion_tokens": 1}}\n\n'
    for stream in (odd, lines):
        out, _, counts = _relay(stream, strip_usage=False)
        assert out.count(b"\n\n") == 1 and b"\n" not in out[:-2] and counts.counts() == {}
        assert json.loads(out[6:].replace(b"NaN", b"null"))["energy"] == {"joules": 1.5, "final": False}
    assert b"%d" % 2**70 in _relay(odd, strip_usage=False)[0]


def test_the_usage_event_keeps_its_other_fields_and_line_ends() -> None:
    """Adversarial probe: the usage event went on as ``data: ...\\n\\n`` alone: its ``id:`` and
    ``event:`` lines were gone and its CRLF line ends changed (an EventSource dispatched it as
    another event type and resumed from another Last-Event-ID)."""
    data = b'{"choices": [{"delta": {}}], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}'
    event = b"id: 2\r\nevent: usage\r\n: a comment\r\ndata: " + data + b"\r\n\r\n"
    out, trace, _ = _relay(event, strip_usage=True)
    head, _, rest = out.partition(b"data: ")
    assert head == b"id: 2\r\nevent: usage\r\n: a comment\r\n" and rest.endswith(b"}\r\n\r\n")
    assert json.loads(rest)["energy"] == {"joules": 1.5, "final": False} and trace.usage == (7, 3)
