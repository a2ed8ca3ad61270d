"""The trace book: a tick looks at the traces that changed or whose prompt estimate is due, no others."""

from __future__ import annotations

import threading

import pytest

from sidecar.attribution.events import Phase
from sidecar.contracts.proxy_wire import Begin, Chunks, Message, Usage, encode
from sidecar.proxy import work
from sidecar.proxy.book import TraceBook
from sidecar.proxy.learn import Counts, RequestTrace
from sidecar.proxy.relay import StreamRelay
from sidecar.proxy.sse import SseEvent
from sidecar.taps.proxy_wire import ProxyWireReceiver


def _stream(rid: str, chunks: list[float], usage: tuple[int, int] | None = (10, 3)) -> RequestTrace:
    return RequestTrace(
        rid, 100.0, "/v1/chat/completions", "m", True, chunk_s=chunks, usage=usage, prompt_chars=40
    )


def _book() -> TraceBook:
    return TraceBook(Counts(), hold_s=1.0, model="m")


def test_a_tick_looks_only_at_the_traces_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    book = _book()
    traces = [_stream(f"r{i}", [100.5]) for i in range(1_000)]  # idle streams: one token each, usage known
    for trace in traces:
        book.add(trace)
    events, infos = book.due(101.0)
    assert len(events) == 1_000 and len(infos) == 1_000  # each one's prefill and first info
    drained: list[str] = []
    real = work.TraceCursor.drain
    monkeypatch.setattr(
        work.TraceCursor, "drain", lambda c, *a: drained.append(c.trace.request_id) or real(c, *a)
    )
    assert book.due(101.1) == ([], [])
    traces[7].chunk_s.append(101.15)
    traces[7].changed()
    events, infos = book.due(101.2)
    assert drained == ["r7"] and [(e.request_id, e.phase) for e in events] == [("r7", Phase.DECODE)]
    assert infos == []  # its first info went out already; the next at its end
    traces[7].end_s, traces[7].done = 101.3, True
    traces[7].changed()
    _, infos = book.due(101.4)
    assert [(i.request_id, i.end_s) for i in infos] == [("r7", 101.3)] and len(book) == 999


def test_a_stalled_stream_gets_its_prompt_estimated_hold_s_after_its_first_token_unasked() -> None:
    book = _book()
    trace = _stream("r1", [100.5], usage=None)  # the usage comes at the end: the prefill waits for it
    book.add(trace)
    assert book.due(101.0)[0] == []
    assert book.due(101.49)[0] == []
    events, _ = book.due(101.5)  # nothing changed: the book's own timer
    assert [(e.phase, e.units) for e in events] == [(Phase.PREFILL, 10.0)]  # 40 characters / 4


def test_traces_are_drained_in_the_order_they_were_registered() -> None:
    book = _book()
    traces = [_stream(f"t{k}", [100.5]) for k in range(20)]
    for trace in traces:
        book.add(trace)
    book.due(101.0)
    for trace in [*reversed(traces), traces[3]]:  # changed last to first (one twice)
        trace.chunk_s.append(trace.chunk_s[-1] + 0.1)
        trace.changed()
    events, _ = book.due(101.5)
    want = [f"t{k}" for k in range(20)]
    assert [e.request_id for e in events] == [*want[:4], "t3", *want[4:]]  # t3: two new tokens


def test_a_tick_that_fails_part_way_loses_no_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    book = _book()
    for rid in ("a", "b"):
        trace = _stream(rid, [100.5])
        trace.end_s, trace.done = 100.6, True
        book.add(trace)
    real, calls = work.request_info, []

    def fails_once(cursor: work.TraceCursor, model: str) -> object:
        calls.append(cursor.trace.request_id)
        if len(calls) == 1:
            raise RuntimeError("a bug in one pass")
        return real(cursor, model)

    monkeypatch.setattr("sidecar.proxy.book.request_info", fails_once)
    with pytest.raises(RuntimeError):
        book.due(101.0)
    _, infos = book.due(101.1)  # both again, as when every trace was looked at each tick
    assert [i.request_id for i in infos] == ["a", "b"] and len(book) == 0


def test_timers_of_finished_streams_do_not_pile_up() -> None:
    book = _book()
    traces = [_stream(f"t{k}", [100.5], usage=None) for k in range(3_000)]
    for trace in traces:
        book.add(trace)
    book.due(100.6)  # each waits for its prompt count: a timer each
    for trace in traces:
        trace.end_s, trace.done = 100.7, True
        trace.changed()
    book.due(100.8)
    book.due(100.9)
    assert len(book) == 0 and len(book._timers) == 0


def test_the_in_process_relay_hands_each_token_and_the_usage_to_the_next_tick() -> None:
    book = _book()
    trace = RequestTrace("r1", 100.0, "/v1/chat/completions", "m", True, prompt_chars=40)
    book.begin(trace)
    clock = iter([100.5, 100.6, 100.8])
    relay = StreamRelay(
        trace,
        strip_usage=False,
        clock=lambda: next(clock),
        in_flight=lambda: 1,
        energy=lambda t: {},
        counts=Counts(),
    )
    book.due(100.1)

    def send(data: bytes) -> None:
        relay.relay(SseEvent(b"data: " + data + b"\n\n", data))

    chunk = b'{"choices":[{"index":0,"delta":{"content":"hi"}}]}'
    send(chunk)
    send(chunk)
    assert book.due(100.65)[0] == []  # the prefill waits for the prompt count
    send(b'{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}}')
    events, _ = book.due(100.7)
    assert [(e.phase, e.units) for e in events] == [(Phase.PREFILL, 9.0), (Phase.DECODE, 1.0)]
    send(chunk)
    events, _ = book.due(100.85)  # still not done
    assert [(e.phase, e.t1_s) for e in events] == [(Phase.DECODE, 100.8)]


def test_the_proxy_process_rows_hand_each_token_and_the_usage_to_the_next_tick() -> None:
    rx = ProxyWireReceiver(lambda unix_s: unix_s - 900.0, wall=lambda: 1000.0, hold_s=0.5)

    def send(seq: int, chunks: list[Chunks], usage: list[Usage], begin: list[Begin] | None = None) -> None:
        rx.feed(encode(Message(7, seq, 1000.0, begin or [], chunks, usage, [], {}))[0])

    send(0, [], [], [Begin("r1", 1.0, "/v1/chat/completions", "m", True, "chat", None, None, 40)])
    rx.due(100.0)
    send(1, [Chunks("r1", 0, [200_000, 100_000])], [])  # tokens at 99.8 and 99.9 (the wall is mono 100)
    assert rx.due(100.0)[0] == []  # the prefill waits for the prompt count, hold_s at most
    send(2, [], [Usage("r1", 12, 3)])
    events, _ = rx.due(100.0)
    assert [(e.phase, e.units) for e in events] == [(Phase.PREFILL, 12.0), (Phase.DECODE, 1.0)]
    send(3, [Chunks("r1", 2, [50_000])], [])
    events, _ = rx.due(100.0)  # not ended yet
    assert [(e.phase, e.t1_s) for e in events] == [(Phase.DECODE, pytest.approx(99.95))]


def test_chunks_added_on_another_thread_while_ticks_run_all_become_work() -> None:
    book = _book()
    trace = _stream("r1", [], usage=(10, 20_000))
    book.add(trace)

    def write() -> None:
        for k in range(20_000):
            trace.chunk_s.append(100.5 + k * 1e-4)
            trace.changed()
        trace.end_s, trace.done = 103.0, True
        trace.changed()

    writer = threading.Thread(target=write)
    writer.start()
    events = []
    while writer.is_alive() or len(book):
        events += book.due(200.0)[0]
    writer.join()
    assert len(book) == 0 and [e.phase for e in events].count(Phase.DECODE) == 19_999
    assert events[0].phase is Phase.PREFILL
