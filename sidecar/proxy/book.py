"""The live traces of proxied completions, and the work each has made since it was last drained.

Both ways the sidecar learns of proxied requests keep one :class:`TraceBook`: the
in-process proxy (:class:`~sidecar.proxy.tap.ProxyTap`: its forwarder registers
each trace and fills it in on the proxy's thread) and the receiver of the proxy
process's datagrams (:class:`~sidecar.taps.proxy_wire.ProxyWireReceiver`: it
rebuilds each trace from the rows). At each tick :meth:`TraceBook.due` turns what
the traces gained into work events and request infos (:mod:`.work`) and forgets
finished traces. Registration is under a lock (it may come from another thread);
a trace's chunk list is read as a prefix (one writer appends).
"""

from __future__ import annotations

import threading

from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.proxy.learn import Counts, RequestTrace, new_request_id
from sidecar.proxy.work import TraceCursor, request_info

__all__ = ["TraceBook"]


class TraceBook:
    """Traces by request id, with what attribution has had of each."""

    def __init__(self, counts: Counts, *, hold_s: float, model: str) -> None:
        self.counts, self.hold_s, self.model = counts, hold_s, model
        self._lock = threading.Lock()
        self._live: dict[str, TraceCursor] = {}
        self._seen: set[str] = set()  # ids whose start info was handed on

    def begin(self, trace: RequestTrace) -> str:
        """Register ``trace``; an id already live is replaced by a new one (counted). Its id."""
        with self._lock:
            if trace.request_id in self._live:
                self.counts.add("duplicate_request_id")
                trace.request_id = new_request_id()
            self._live[trace.request_id] = TraceCursor(trace)
        return trace.request_id

    def add(self, trace: RequestTrace) -> bool:
        """Register ``trace`` as it is; False (not registered) if its id is live."""
        with self._lock:
            if trace.request_id in self._live:
                return False
            self._live[trace.request_id] = TraceCursor(trace)
        return True

    def get(self, request_id: str) -> RequestTrace | None:
        cursor = self._live.get(request_id)
        return None if cursor is None else cursor.trace

    def __len__(self) -> int:
        return len(self._live)

    def due(self, now_s: float) -> tuple[list[WorkEvent], list[RequestInfo]]:
        """Work the live traces made since the last call; infos at first sight and at the end."""
        with self._lock:
            cursors = list(self._live.values())
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
