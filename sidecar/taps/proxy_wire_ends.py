"""How the proxy wire's live requests end when the proxy does not end them, and what is kept of them.

A request not heard of for ``expire_s`` (at least twice
:data:`~sidecar.contracts.proxy_wire.ALIVE_MAX_S`) ends (``expired``: the proxy went away), timed
by when its datagrams arrived, not the sender's ``wall``; chunk times beyond ``max_chunks`` end
the oldest requests of the sender holding the most (``evicted``) while that is another sender.
Such a request's record says its work was lost (never a measured 0 J). A mixin of
:class:`~sidecar.taps.proxy_wire.ProxyWireReceiver`, which sets these attributes.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from sidecar.contracts.proxy_wire import ALIVE_MAX_S
from sidecar.proxy.book import TraceBook
from sidecar.taps.proxy_wire_owners import Owners

__all__ = ["LiveEnds"]


class LiveEnds:
    """Ends and forgets live requests; the receiver sets these attributes."""

    counts: Counter[str]
    expire_s: float
    max_chunks: int
    _chunks_held: int  # chunk times of requests not yet ended
    _book: TraceBook
    _heard: OrderedDict[str, tuple[float, float]]  # live id -> (arrived, the time it gave), mono s
    _chunks_next: dict[str, int]
    _renamed: dict[str, str]
    _proxy_id: dict[str, str]
    _owners: Owners

    def _room_for(self, request_id: str, n_chunks: int) -> bool:
        """Room for ``n_chunks`` more chunk times of the request within ``max_chunks``, made by ending
        the oldest requests of the sender holding the most while that is another one (``evicted``)."""
        while self._chunks_held + n_chunks > self.max_chunks:
            most = self._owners.most_chunks()
            if most is None or most[0] == self._owners.pid_of(request_id):
                return False
            self._finish(most[1], "evicted")
        return True

    def _forget(self, request_id: str) -> None:
        """Drop what is kept of a live request (by the id it goes by here) once it ends."""
        self._heard.pop(request_id, None)
        self._chunks_next.pop(request_id, None)
        self._owners.drop(request_id)
        proxy_id = self._proxy_id.pop(request_id, None)
        if proxy_id is not None:
            del self._renamed[proxy_id]

    def _finish(self, request_id: str, why: str) -> None:
        """End a request the proxy will not end (gone quiet, or one too many): counted ``why``."""
        arrived_s, heard_s = self._heard[request_id]
        self._forget(request_id)
        trace = self._book.get(request_id)
        if trace is not None and not trace.done:
            trace.work_lost = True  # what it did after its last row never came: never a measured 0 J
            trace.outcome = "disconnected"
            last_s = trace.chunk_s[-1] if trace.chunk_s else trace.arrival_s
            trace.end_s = max(last_s, min(heard_s, arrived_s))  # not after its datagram came
            trace.done = True
            trace.changed()
            self._chunks_held -= len(trace.chunk_s)
        self.counts[why] += 1

    def _expire(self, now_s: float) -> None:
        while self._heard:
            request_id, (arrived_s, _) = next(iter(self._heard.items()))
            if now_s - arrived_s < max(self.expire_s, 2 * ALIVE_MAX_S):  # alive rows may be that far apart
                return
            self._finish(request_id, "expired")
