"""Which proxy process (pid) began each live request on the proxy wire, and what each one holds.

Any datagram can name any pid, so what one sender does must cost its own requests only:

* a gap in a sender's datagram numbers (a datagram of its lost) marks only *its* requests in
  flight as having lost work (two forged header-only datagrams, seq 0 then 5, marked every
  live request of every proxy);
* over the receiver's caps (requests in flight, chunk times held) the sender holding the most
  pays: its oldest request ends, not the newcomer's row nor the request beside it (51,000
  forged ``begin`` rows evicted every real request; forged chunk rows took the whole chunk
  budget and the real streams' rows were refused).

The pids that count on their own are those of the receiver's table of senders (64: over it, the
one heard least lately with no live request is forgotten first, then the one heard least
lately). The live requests of every pid that table forgot count together, as one owner,
:data:`FORGOTTEN` (a flood's pid pushed out by more forged ones still pays, as part of it), so
finding the sender holding the most looks at 65 at most, however many pids a flood names. Each
forgotten pid keeps its own requests within it: where :data:`FORGOTTEN` pays, the pid that began
its live requests latest pays first (a flood's pids are new; a proxy serving is not), and a pid
heard again takes its requests back (:meth:`Owners.remember`). So a proxy keeps its streams through
a flood of forged pids, sending or not: 64 of them pushed the real proxy out, its streams went to
the shared owner's front, and forged ``begin`` rows evicted them there.
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict

__all__ = ["FORGOTTEN", "Owners"]

FORGOTTEN = -1  # the owner of the live requests of every pid forgotten (a real pid is >= 0)


class Owners:
    """Live request id -> the pid whose ``begin`` made it; per pid, its live ids (oldest first) and
    the chunk times they hold; the pids forgotten, earliest first."""

    def __init__(self) -> None:
        self._pid_of: dict[str, int] = {}
        self._held: Counter[str] = Counter()  # live id -> the chunk times it holds
        self._ids: dict[int, OrderedDict[str, None]] = {}  # every pid with live requests
        self._chunks: Counter[int] = Counter()
        self._mine: dict[int, None] = {}  # pids remembered with live requests (the table's: 64)
        self._gone: dict[int, None] = {}  # pids forgotten (with live requests)
        self._born: dict[int, int] = {}  # pid -> when it began its live requests (a number, ascending)
        self._next_born = 0
        self._youngest: list[tuple[int, int]] = []  # heap of (-born, pid) of pids forgotten (stale kept)
        self._gone_n = 0  # the live requests of the pids forgotten
        self._gone_chunks = 0  # and the chunk times they hold

    def add(self, request_id: str, pid: int) -> None:
        """A request begun by ``pid`` (by the id it goes by in the receiver)."""
        self._pid_of[request_id] = pid
        if pid not in self._ids:
            self._ids[pid] = OrderedDict()
            self._born[pid] = self._next_born
            self._next_born += 1
        self._ids[pid][request_id] = None
        if pid in self._gone:
            self._gone_n += 1
        else:
            self._mine[pid] = None

    def pid_of(self, request_id: str) -> int | None:
        """The owner a request counts under: its pid, or :data:`FORGOTTEN` (None: not live)."""
        pid = self._pid_of.get(request_id)
        return FORGOTTEN if pid in self._gone else pid

    def holds(self, pid: int) -> bool:
        """Whether ``pid`` began a request still live."""
        return pid in self._ids

    def ids(self, pid: int) -> list[str]:
        """The live requests ``pid`` began, oldest first."""
        return list(self._ids.get(pid, ()))

    def forget(self, pid: int) -> None:
        """``pid`` is no longer among the senders remembered: its live requests count under
        :data:`FORGOTTEN`."""
        if pid in self._mine:
            del self._mine[pid]
            self._gone[pid] = None
            if len(self._youngest) > 2 * len(self._gone) + 64:  # mostly stale: rebuilt
                self._youngest = [(-self._born[p], p) for p in self._gone]
                heapq.heapify(self._youngest)
            else:
                heapq.heappush(self._youngest, (-self._born[pid], pid))
            self._gone_n += len(self._ids[pid])
            self._gone_chunks += self._chunks[pid]

    def remember(self, pid: int) -> None:
        """``pid`` heard again: its live requests count under it again."""
        if pid in self._gone:
            del self._gone[pid]
            self._mine[pid] = None
            self._gone_n -= len(self._ids[pid])
            self._gone_chunks -= self._chunks[pid]

    def took_chunks(self, request_id: str, n_chunks: int) -> None:
        """``n_chunks`` chunk times more held by the request (by its owner, for :meth:`most_chunks`)."""
        pid = self._pid_of.get(request_id)
        if pid is not None:
            self._held[request_id] += n_chunks
            self._chunks[pid] += n_chunks
            if pid in self._gone:
                self._gone_chunks += n_chunks

    def drop(self, request_id: str) -> None:
        """The request ended (or was forgotten): what it held no longer counts."""
        pid = self._pid_of.pop(request_id, None)
        if pid is None:
            return
        ids = self._ids[pid]
        del ids[request_id]
        held = self._held.pop(request_id, 0)
        self._chunks[pid] -= held
        if pid in self._gone:
            self._gone_n -= 1
            self._gone_chunks -= held
        if not ids:
            del self._ids[pid]
            del self._chunks[pid]
            self._gone.pop(pid, None)
            self._mine.pop(pid, None)
            del self._born[pid]

    def most_requests(self) -> str | None:
        """The oldest live request of the owner with the most in flight (None: none)."""
        owner = self._most({p: len(self._ids[p]) for p in self._mine}, self._gone_n)
        return None if owner is None else self._oldest(owner)

    def most_chunks(self) -> tuple[int, str] | None:
        """The owner whose live requests hold the most chunk times, and its oldest request."""
        owner = self._most({p: self._chunks[p] for p in self._mine}, self._gone_chunks)
        return None if owner is None else (owner, self._oldest(owner))

    def _most(self, sizes: dict[int, int], gone_size: int) -> int | None:
        if self._gone:
            sizes[FORGOTTEN] = gone_size
        return max(sizes, key=sizes.__getitem__, default=None)

    def _oldest(self, owner: int) -> str:
        """An owner's oldest live request: of :data:`FORGOTTEN`, that of the youngest pid in it."""
        return next(iter(self._ids[self._youngest_gone() if owner == FORGOTTEN else owner]))

    def _youngest_gone(self) -> int:
        """The forgotten pid that began its live requests latest (stale heap entries dropped)."""
        while True:
            born, pid = self._youngest[0]
            if pid in self._gone and self._born[pid] == -born:
                return pid
            heapq.heappop(self._youngest)
