"""CPU per tick of the proxy's trace book with 0 / 10k / 50k idle streams in flight.

An idle stream is a proxied completion that has its first token and then nothing (a slow
client, a long generation between chunks, a stalled upstream): it is live until it ends.
A busy set of 64 streams gains a token each per tick and 4 of them end per tick, replaced
by new ones. The timed path is the sidecar's tick of the proxy tap
(:meth:`sidecar.proxy.book.TraceBook.due`, 100 ms apart), what the in-process proxy and
the proxy process's receiver both run.

Baseline in the same run: the book's ``due`` before 2026-12-01, copied as it was: every
live trace visited on every tick. Ends with one line ``proxy idle 50000 tick ms N (baseline M)``.

    .venv/bin/python benchmarks/proxy_idle.py [--ticks 200]
"""

from __future__ import annotations

import time

import numpy as np
from side_by_side import tick_benchmark

from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.proxy.book import TraceBook
from sidecar.proxy.learn import Counts, RequestTrace
from sidecar.proxy.work import request_info

TICK_S = 0.1
BUSY = 64


class SweepBook(TraceBook):
    """Every live trace looked at on every tick: the book's ``due`` before 2026-12-01, as it was
    (over this book's table of (registration number, cursor)), the baseline."""

    def due(self, now_s: float) -> tuple[list[WorkEvent], list[RequestInfo]]:
        with self._lock:
            cursors = [cursor for _, cursor in self._live.values()]
        self._changed.clear()  # the writers' notes: this book does not read them
        events: list[WorkEvent] = []
        infos: list[RequestInfo] = []
        finished: list[str] = []
        for cursor in cursors:
            trace = cursor.trace
            done = trace.done  # read before draining: events made before it are all in
            if trace.outcome == "upstream_down" or (done and trace.status >= 400 and not trace.chunk_s):
                finished.append(trace.request_id)  # no work reached an engine
                continue
            events.extend(cursor.drain(now_s, self.hold_s))
            rid = trace.request_id
            if done or rid not in self._seen:
                infos.append(request_info(cursor, self.model))
                self._seen.add(rid)
            if done:
                finished.append(rid)
        with self._lock:
            for rid in finished:
                self._live.pop(rid, None)
                self._seen.discard(rid)
        return events, infos


def _stream(rid: str, t_s: float) -> RequestTrace:
    return RequestTrace(rid, t_s, "/v1/chat/completions", "m", True, chunk_s=[t_s + 0.05], usage=(50, 100))


def run(cls: type[TraceBook], n_idle: int, n_ticks: int) -> tuple[float, int]:
    """CPU seconds per tick (median) and work events made, for ``n_idle`` idle streams."""
    book = cls(Counts(), hold_s=1.0, model="m")
    for k in range(n_idle):
        book.add(_stream(f"idle{k}", 0.0))
    busy = [_stream(f"r{k}", 0.0) for k in range(BUSY)]
    for trace in busy:
        book.add(trace)
    book.due(0.1)  # every stream's first info and prefill
    costs: list[float] = []
    events, made = 0, BUSY
    for tick in range(1, n_ticks + 1):
        now_s = 0.1 + tick * TICK_S
        for trace in busy:
            trace.chunk_s.append(now_s - 0.01)
            trace.changed()
        for trace in busy[:4]:
            trace.end_s, trace.done = now_s - 0.005, True
            trace.changed()
        busy = busy[4:] + [_stream(f"r{made + k}", now_s - 0.05) for k in range(4)]
        for trace in busy[-4:]:
            book.add(trace)
        made += 4
        start = time.process_time()
        events += len(book.due(now_s)[0])
        costs.append(time.process_time() - start)
    return float(np.median(costs)), events


def main() -> None:
    tick_benchmark(
        __doc__,
        200,
        run,
        (SweepBook, TraceBook),
        (0, 10_000, 50_000),
        ("idle streams", "work events", "proxy idle"),
        f"{TICK_S * 1000:.0f} ms, {BUSY} streams gaining a token each, 4 ending",
    )


if __name__ == "__main__":
    main()
