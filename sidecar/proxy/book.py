"""The live traces of proxied completions, and the work each has made since it was last drained.

Both ways the sidecar learns of proxied requests keep one :class:`TraceBook`: the
in-process proxy (:class:`~sidecar.proxy.tap.ProxyTap`: its forwarder registers
each trace and fills it in on the proxy's thread) and the receiver of the proxy
process's datagrams (:class:`~sidecar.taps.proxy_wire.ProxyWireReceiver`: it
rebuilds each trace from the rows). At each tick :meth:`TraceBook.due` turns what
the traces gained into work events and request infos (:mod:`.work`) and forgets
finished traces. Registration is under a lock (it may come from another thread);
a trace's chunk list is read as a prefix (one writer appends). Work of a request that
the vLLM scheduler hook or plugin reports too (``claimed_by``: the same id) is left
to it (its per-step work is exact; counted ``work_claimed_by_engine``); the proxy's
info (task, tenant, status) still goes on.

A tick looks only at the traces that changed since the last one (their writer calls
:meth:`~sidecar.proxy.learn.RequestTrace.changed`, which appends the id to a queue
any thread may append to) and at those whose prompt estimate falls due (``hold_s``
after the first token, when the upstream has not said its usage: a heap of those
times), so a tick's cost does not grow with the idle streams in flight. Traces are
drained in the order they were registered. A tick that fails part way gives the traces it
had not handled back to the next one (a bug in one pass loses no trace, as when every trace
was looked at each tick); a finished trace's timer is dropped when it comes due, and the heap
is rebuilt from the live ones once it holds more dead entries than live.

Keep-alive: every ``alive_every_s`` a live trace's info is handed on again, so attribution
does not end, by its ``request_timeout_s``, a request that is still being answered but has
made no work yet (a plain answer the engine takes long to give, a long queue wait). Each live
trace has one entry in a queue of those times (the same interval for all: a FIFO, no heap).
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from collections import deque
from collections.abc import Callable
from operator import itemgetter

from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.proxy.learn import Counts, GivenIds, RequestTrace
from sidecar.proxy.work import TraceCursor, request_info

__all__ = ["TraceBook"]


class TraceBook:
    """Traces by request id, with what attribution has had of each."""

    def __init__(
        self,
        counts: Counts,
        *,
        hold_s: float,
        model: str,
        claimed_by: Callable[[str], bool] | None = None,
        alive_every_s: float = math.inf,
    ) -> None:
        self.counts, self.hold_s, self.model = counts, hold_s, model
        self.alive_every_s = alive_every_s
        self.claimed_by = claimed_by  # a tap with the request's exact work (the vLLM hook or plugin)
        self._lock = threading.Lock()
        self._live: dict[str, tuple[int, TraceCursor]] = {}  # id -> (registration number, cursor)
        self._numbers = itertools.count()
        self._seen: set[str] = set()  # ids whose start info was handed on
        self._changed: deque[str] = deque()  # ids of traces that changed (appended from any thread)
        # (when a prompt estimate is due, the trace's registration number, its id); a stale one is skipped
        self._timers: list[tuple[float, int, str]] = []
        self._timed: set[str] = set()  # ids of live traces with a timer in the heap
        self._ids = GivenIds(counts)  # ids begun here: a client's reuse is replaced
        self._alive_due: deque[tuple[float, int, str]] = deque()  # (when, number, id): info again
        self._alive_now: set[str] = set()  # ids whose info is due again this tick

    def begin(self, trace: RequestTrace) -> str:
        """Register ``trace``; an id live, or given to one of the last requests begun here, is replaced
        by a new one (counted: :class:`~sidecar.proxy.learn.GivenIds`). Its id."""
        with self._lock:
            self._ids.give(trace, self._live)
            self._register(trace)
        return trace.request_id

    def add(self, trace: RequestTrace) -> bool:
        """Register ``trace`` as it is; False (not registered) if its id is live."""
        with self._lock:
            if trace.request_id in self._live:
                return False
            self._register(trace)
        return True

    def _register(self, trace: RequestTrace) -> None:
        self._live[trace.request_id] = (next(self._numbers), TraceCursor(trace))
        trace.notify = self._changed.append
        self._changed.append(trace.request_id)  # its first info, and what it may hold already

    def get(self, request_id: str) -> RequestTrace | None:
        live = self._live.get(request_id)
        return None if live is None else live[1].trace

    def __len__(self) -> int:
        return len(self._live)

    def due(self, now_s: float) -> tuple[list[WorkEvent], list[RequestInfo]]:
        """Work the changed traces made since the last call; infos at first sight and at the end."""
        events: list[WorkEvent] = []
        infos: list[RequestInfo] = []
        finished: list[str] = []
        visit = self._to_visit(now_s)
        try:
            self._visit(visit, now_s, events, infos, finished)
        except BaseException:  # looked at again next tick (the finished ones too: still live), none lost
            self._changed.extend(rid for _, _, rid in visit)
            raise
        self._alive_now.clear()
        with self._lock:
            for rid in finished:
                self._live.pop(rid, None)
                self._seen.discard(rid)
                self._timed.discard(rid)
        claimed = self.claimed_by
        if claimed is not None and events:  # the engine's tap has their work: not counted twice
            kept = [e for e in events if not claimed(e.request_id)]
            if len(kept) < len(events):
                self.counts.add("work_claimed_by_engine", len(events) - len(kept))
            events = kept
        return events, infos

    def _visit(
        self,
        visit: list[tuple[int, TraceCursor, str]],
        now_s: float,
        events: list[WorkEvent],
        infos: list[RequestInfo],
        finished: list[str],
    ) -> None:
        for number, cursor, rid in visit:
            trace = cursor.trace
            done = trace.done  # read before draining: events made before it are all in
            if trace.outcome == "upstream_down" or (done and trace.status >= 400 and not trace.chunk_s):
                finished.append(rid)  # no work reached an engine
                continue
            events.extend(cursor.drain(now_s, self.hold_s))
            if done or rid not in self._seen or rid in self._alive_now:
                infos.append(request_info(cursor, self.model))
                if rid not in self._seen and math.isfinite(self.alive_every_s):
                    self._alive_due.append((now_s + self.alive_every_s, number, rid))
                self._seen.add(rid)
            if done:
                finished.append(rid)
            else:
                self._time_prompt(number, cursor, rid)

    def _to_visit(self, now_s: float) -> list[tuple[int, TraceCursor, str]]:
        """The live traces that changed, or whose prompt estimate is due, in registration order:
        (registration number, cursor, id) each."""
        changed, ids = self._changed, set()
        for _ in range(len(changed)):  # what was appended by now; later appends wait for the next tick
            ids.add(changed.popleft())
        timers = self._timers
        with self._lock:
            while timers and timers[0][0] <= now_s:
                _, number, rid = heapq.heappop(timers)
                if self._live.get(rid, (-1,))[0] == number:  # not a finished trace's, nor an old id's
                    self._timed.discard(rid)
                    ids.add(rid)
            self._keep_alive(now_s, ids)
            if len(timers) > 2 * len(self._timed) + 1024:  # mostly finished traces' timers: rebuild
                self._timers = [t for t in timers if self._live.get(t[2], (-1,))[0] == t[1]]
                heapq.heapify(self._timers)
            live = [(*self._live[rid], rid) for rid in ids if rid in self._live]
        live.sort(key=itemgetter(0))
        return live

    def _keep_alive(self, now_s: float, ids: set[str]) -> None:
        """The live traces whose info is due again join ``ids`` (under the lock); each is due again
        ``alive_every_s`` later; a finished trace's entry is dropped when it comes due."""
        alive = self._alive_due
        while alive and alive[0][0] <= now_s:
            _, number, rid = alive.popleft()
            if self._live.get(rid, (-1,))[0] == number:
                ids.add(rid)
                self._alive_now.add(rid)
                alive.append((now_s + self.alive_every_s, number, rid))

    def _time_prompt(self, number: int, cursor: TraceCursor, rid: str) -> None:
        """A stream that has its first token but no prompt count yet is looked at again when the count
        is estimated (``hold_s`` after that token), whether or not it changes by then."""
        first_s = cursor.trace.first_token_s
        if cursor.prompt_tokens is None and first_s is not None and rid not in self._timed:
            heapq.heappush(self._timers, (first_s + self.hold_s, number, rid))
            self._timed.add(rid)
