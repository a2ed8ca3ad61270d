"""The trace book: a tick looks at the traces that changed or whose prompt estimate is due, no others."""

from __future__ import annotations

import threading

import pytest

from sidecar.attribution.events import Phase
from sidecar.proxy import work
from sidecar.proxy.book import TraceBook
from sidecar.proxy.learn import Counts, RequestTrace


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
    traces = [_stream(rid, [100.5]) for rid in ("a", "b", "c")]
    for trace in traces:
        book.add(trace)
    book.due(101.0)
    for trace in (traces[2], traces[0], traces[2]):
        trace.chunk_s.append(trace.chunk_s[-1] + 0.1)
        trace.changed()
    events, _ = book.due(101.5)
    assert [e.request_id for e in events] == ["a", "c", "c"]


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
