"""Which proxy process (pid) began each live request on the proxy wire, and what each one holds.

Any datagram can name any pid, so what one sender does must cost its own requests only:

* a gap in a sender's datagram numbers (a datagram of its lost) marks only *its* requests in
  flight as having lost work (two forged header-only datagrams, seq 0 then 5, marked every
  live request of every proxy);
* over the receiver's caps (requests in flight, chunk times held) the sender holding the most
  pays: its oldest request ends, not the newcomer's row nor the request beside it (51,000
  forged ``begin`` rows evicted every real request; forged chunk rows took the whole chunk
  budget and the real streams' rows were refused).

The pids kept are those of the receiver's table of senders (the 64 heard most lately): a pid
that table forgets hands its live requests to one shared owner, :data:`FORGOTTEN` (a flood's
pid pushed out by more forged ones still pays, as part of it), so finding the sender holding
the most looks at 65 at most, however many pids a flood names.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

__all__ = ["FORGOTTEN", "Owners"]

FORGOTTEN = -1  # the owner of the live requests of every pid forgotten (a real pid is >= 0)


class Owners:
    """Live request id -> the pid whose ``begin`` made it; per pid, its live ids (oldest first) and
    the chunk times they hold."""

    def __init__(self) -> None:
        self._pid_of: dict[str, int] = {}
        self._held: Counter[str] = Counter()  # live id -> the chunk times it holds
        self._ids: dict[int, OrderedDict[str, None]] = {}
        self._chunks: Counter[int] = Counter()

    def add(self, request_id: str, pid: int) -> None:
        """A request begun by ``pid`` (by the id it goes by in the receiver)."""
        self._pid_of[request_id] = pid
        self._ids.setdefault(pid, OrderedDict())[request_id] = None

    def pid_of(self, request_id: str) -> int | None:
        return self._pid_of.get(request_id)

    def ids(self, pid: int) -> list[str]:
        """The live requests ``pid`` began, oldest first."""
        return list(self._ids.get(pid, ()))

    def forget(self, pid: int) -> None:
        """``pid`` is no longer among the senders remembered: its live requests go to :data:`FORGOTTEN`."""
        ids = self._ids.pop(pid, None)
        if ids is None:
            return
        for request_id in ids:
            self.add(request_id, FORGOTTEN)
        self._chunks[FORGOTTEN] += self._chunks.pop(pid)

    def took_chunks(self, request_id: str, n_chunks: int) -> None:
        """``n_chunks`` chunk times more held by the request (by its owner, for :meth:`most_chunks`)."""
        pid = self._pid_of.get(request_id)
        if pid is not None:
            self._held[request_id] += n_chunks
            self._chunks[pid] += n_chunks

    def drop(self, request_id: str) -> None:
        """The request ended (or was forgotten): what it held no longer counts."""
        pid = self._pid_of.pop(request_id, None)
        if pid is None:
            return
        ids = self._ids[pid]
        del ids[request_id]
        self._chunks[pid] -= self._held.pop(request_id, 0)
        if not ids:
            del self._ids[pid]
            del self._chunks[pid]

    def most_requests(self) -> str | None:
        """The oldest live request of the pid with the most in flight (None: none)."""
        pid = max(self._ids, key=lambda p: len(self._ids[p]), default=None)
        return None if pid is None else next(iter(self._ids[pid]))

    def most_chunks(self) -> tuple[int, str] | None:
        """The pid whose live requests hold the most chunk times, and its oldest request."""
        pid = max(self._ids, key=lambda p: self._chunks[p], default=None)
        return None if pid is None else (pid, next(iter(self._ids[pid])))
