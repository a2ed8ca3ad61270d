"""Work events from chunk timing: prefill to the first token, one decode step per later chunk."""

from __future__ import annotations

import pytest

from sidecar.attribution.events import Phase
from sidecar.proxy.learn import RequestTrace
from sidecar.proxy.work import TraceCursor, request_info


def _stream(chunks: list[float], usage: tuple[int, int] | None = (10, 3), done: bool = True) -> RequestTrace:
    return RequestTrace(
        "r1",
        arrival_s=100.0,
        path="/v1/chat/completions",
        model="m",
        stream=True,
        tenant="acme",
        prompt_chars=40,
        chunk_s=chunks,
        usage=usage,
        end_s=chunks[-1] + 0.01 if done else None,
        done=done,
    )


def test_a_stream_is_prefill_then_one_decode_token_per_later_chunk() -> None:
    events = TraceCursor(_stream([100.5, 100.6, 100.8])).drain(101.0, hold_s=1.0)
    assert [(e.phase, e.t0_s, e.t1_s, e.units) for e in events] == [
        (Phase.PREFILL, 100.0, 100.5, 10.0),
        (Phase.DECODE, 100.5, 100.6, 1.0),
        (Phase.DECODE, 100.6, 100.8, 1.0),
    ]
    assert events[0].context_tokens == 10 * 11 / 2
    assert [e.context_tokens for e in events[1:]] == [11.0, 12.0]
    for event in events:
        event.check()


def test_draining_again_yields_only_the_new_chunks() -> None:
    trace = _stream([100.5, 100.6], done=False)
    cursor = TraceCursor(trace)
    assert len(cursor.drain(100.7, 1.0)) == 2
    trace.chunk_s.append(100.9)
    assert [(e.t0_s, e.t1_s) for e in cursor.drain(101.0, 1.0)] == [(100.6, 100.9)]
    assert cursor.drain(101.1, 1.0) == []


def test_prefill_waits_for_usage_but_not_past_hold_s_then_the_prompt_is_estimated() -> None:
    cursor = TraceCursor(_stream([100.5, 100.6], usage=None, done=False))
    assert cursor.drain(101.0, hold_s=1.0) == []  # 0.5 s after the first token: still waiting
    events = cursor.drain(101.6, hold_s=1.0)
    assert events[0].units == 10.0 and cursor.estimated  # 40 characters / 4
    info = request_info(cursor, "default")
    assert info.attributes["prompt_tokens_estimated"] == "true" and info.end_s is None


def test_a_plain_completion_is_one_prefill_step_then_its_decode_steps_at_the_end() -> None:
    trace = RequestTrace("r2", 100.0, "/v1/completions", usage=(8, 4), end_s=104.0, done=True)
    events = TraceCursor(trace).drain(105.0, 1.0)
    assert [(e.phase, e.t0_s, e.t1_s, e.units, e.steps) for e in events] == [
        (Phase.PREFILL, 100.0, 101.0, 8.0, 1.0),
        (Phase.DECODE, 101.0, 104.0, 3.0, 3.0),
    ]


def test_the_request_info_carries_tenant_tokens_model_and_end() -> None:
    cursor = TraceCursor(_stream([100.5, 100.6, 100.8]))
    cursor.drain(101.0, 1.0)
    info = request_info(cursor, "default")
    assert (info.model, info.operation, info.prompt_tokens, info.output_tokens) == ("m", "chat", 10, 3)
    assert info.attributes["jouletrace.tenant"] == "acme" and info.end_s == pytest.approx(100.81)


def test_a_stream_that_ended_without_a_chunk_is_read_as_a_plain_answer() -> None:
    """An engine that answered ``stream: true`` with one JSON completion: read as a stream, no event."""
    trace = _stream([100.5], usage=(10, 3))
    trace.chunk_s.clear()
    cursor = TraceCursor(trace)
    events = cursor.drain(101.0, hold_s=1.0)
    assert [(e.phase, e.t0_s, e.units) for e in events] == [
        (Phase.PREFILL, 100.0, 10.0),
        (Phase.DECODE, pytest.approx(100.17), 2.0),
    ]
    assert cursor.drain(102.0, hold_s=1.0) == []  # once
    live = _stream([100.5], usage=None, done=False)
    live.chunk_s.clear()
    assert TraceCursor(live).drain(101.0, hold_s=1.0) == []  # in flight: its chunks may yet come
