"""Request spans waiting for their trace's client span: a few arrays, not objects a span.

vLLM's ``llm_request`` span of a request often comes before the client span that names its task
(:mod:`.vllm_span_tasks`): the request span then waits, at most ``vllm_task_wait_s`` (30 s), and
at most :data:`~sidecar.taps.vllm_span_tasks.MAX_WAITING` of them. Under a span flood with no
client spans, the table is full all the time and every entry lives its whole wait: as an ordered
dict of trace id strings to lists of ``(request id, time)`` tuples it held ~205 bytes a span in
small objects (``benchmarks/inflight_bytes.py``), made while the flood's short-lived objects were,
and each one outliving them kept CPython's memory arenas they shared from being given back.

:class:`WaitingSpans` keeps the spans handled since the last :meth:`~WaitingSpans.seal` in two
lists (a batch's added with one ``extend`` each; a join scans them with ``list.index``), then seals
them into a *generation*: their request ids joined into
one string (``\\0`` between: an id is printable text), and, in arrays sorted by the 64-bit
``hash()`` of the trace id (SipHash, the process's random key), each one's generation, place in
it and whether it still waits. A join is one binary search; about 60 bytes a span, in a few large
blocks that are freed whole. Two trace ids with the same hash would be joined as one (one client
span would name another trace's waiting requests); with 20,000 waiting, once in ~10^15 joins, and
a client cannot aim for it (the key is random).

The spans added within :data:`SEAL_EVERY_S` of each other (or :data:`SEAL_ROWS` of them) are
sealed together; a generation waits as long as its last span does (a span may wait up to
:data:`SEAL_EVERY_S` longer than the wait); beyond the bound the oldest spans are forgotten
first, down to ``most - most // 8`` (so a full table evicts a batch at a time, not at every
span). Both counted by the caller.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["SEAL_EVERY_S", "SEAL_ROWS", "WaitingSpans"]

# The spans added since the last seal are sealed once the first of them was handled this long
# before the one being added (s), or this many wait unsealed: two lists of them for at most that long.
SEAL_EVERY_S = 1.0
SEAL_ROWS = 4096


@dataclass(slots=True)
class _Generation:
    """The request spans one seal took: their ids, joined, and how many still wait."""

    serial: int
    last_s: float  # when its last span was handled
    text: str  # the request ids, "\0" between
    ends: np.ndarray  # each id's end in text, plus one (its "\0")
    waiting: int

    def request_id(self, at: int) -> str:
        start = int(self.ends[at - 1]) if at else 0
        return self.text[start : int(self.ends[at]) - 1]


class WaitingSpans:
    """Request ids waiting by trace id: added, taken by trace, expired and evicted oldest first."""

    __slots__ = (
        "_at",
        "_gen",
        "_gens",
        "_keys",
        "_left",
        "_new_first_s",
        "_new_ids",
        "_new_last_s",
        "_new_n",
        "_new_traces",
        "_sealed_n",
        "_serial",
        "most",
    )

    def __init__(self, most: int) -> None:
        self.most = most
        # since the last seal, in the order added: trace ids (None: taken) and request ids
        self._new_traces: list[str | None] = []
        self._new_ids: list[str] = []
        self._new_n = 0  # of them still waiting
        self._new_first_s = self._new_last_s = -np.inf
        self._sealed_n = 0  # sealed spans still waiting
        self._serial = 0
        self._gens: deque[_Generation] = deque()  # oldest first
        self._keys = np.empty(0, dtype=np.int64)  # hash of each sealed span's trace id, sorted
        self._gen = np.empty(0, dtype=np.int64)  # its generation's serial
        self._at = np.empty(0, dtype=np.int32)  # its place in the generation
        self._left = np.empty(0, dtype=bool)  # still waiting (not taken or evicted)

    def __len__(self) -> int:
        """Request spans waiting."""
        return self._new_n + self._sealed_n

    def add(self, trace_id: str, request_id: str, handled_s: float) -> int:
        """``request_id`` waits for ``trace_id``'s task from ``handled_s``; returns how many waiting
        spans this pushed out (the oldest first, a batch at a time)."""
        return self.add_many([trace_id], [request_id], handled_s)

    def add_many(self, trace_ids: list[str], request_ids: list[str], handled_s: float) -> int:
        """:meth:`add` of each pair in turn, all handled at ``handled_s``."""
        if not trace_ids:
            return 0
        traces = self._new_traces
        if traces and (len(traces) >= SEAL_ROWS or handled_s - self._new_first_s >= SEAL_EVERY_S):
            self.seal()
            traces = self._new_traces
        if not traces:
            self._new_first_s = handled_s
        traces.extend(trace_ids)
        self._new_ids.extend(request_ids)
        self._new_n += len(trace_ids)
        self._new_last_s = max(self._new_last_s, handled_s)
        n = self._new_n + self._sealed_n
        return self._evict(n - (self.most - self.most // 8)) if n > self.most else 0

    def take(self, trace_id: str) -> list[str]:
        """The request ids waiting for ``trace_id`` (the earliest handled first); they wait no more."""
        taken: list[str] = []
        if self._keys.size:
            h = hash(trace_id)
            lo, hi = int(self._keys.searchsorted(h, "left")), int(self._keys.searchsorted(h, "right"))
            if hi > lo:
                found = lo + np.flatnonzero(self._left[lo:hi])
                self._left[found] = False
                self._sealed_n -= found.size
                first = self._gens[0].serial  # serials run on by one, the oldest first
                for serial, at in sorted(
                    zip(self._gen[found].tolist(), self._at[found].tolist(), strict=True)
                ):
                    gen = self._gens[serial - first]
                    gen.waiting -= 1
                    taken.append(gen.request_id(at))
                while self._gens and not self._gens[0].waiting:  # all joined: its arrays go now
                    self._drop_oldest()
        traces, at = self._new_traces, -1
        while self._new_n:  # a scan at C speed of the spans since the last seal
            try:
                at = traces.index(trace_id, at + 1)
            except ValueError:
                break
            traces[at] = None
            self._new_n -= 1
            taken.append(self._new_ids[at])
        return taken

    def expire(self, oldest_kept_s: float) -> int:
        """Forget the generations (and the spans added since the last seal) whose last span was
        handled before ``oldest_kept_s``; returns how many spans still waited in them."""
        gone = 0
        while self._gens and self._gens[0].last_s < oldest_kept_s:
            gone += self._drop_oldest()
        if self._new_traces and self._new_last_s < oldest_kept_s:
            gone += self._new_n
            self._clear_new()
        return gone

    def _clear_new(self) -> None:
        self._new_traces, self._new_ids, self._new_n = [], [], 0
        self._new_first_s = self._new_last_s = -np.inf

    def seal(self) -> None:
        """Move the spans added since the last seal into the arrays, as one generation."""
        traces, ids = self._new_traces, self._new_ids
        if self._new_n < len(traces):  # some taken already
            waiting = [i for i, trace in enumerate(traces) if trace is not None]
            traces, ids = [traces[i] for i in waiting], [ids[i] for i in waiting]
        last_s = self._new_last_s
        self._clear_new()
        if not traces:
            return
        keys = np.fromiter(map(hash, traces), dtype=np.int64, count=len(traces))
        ends = np.cumsum(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)) + 1)
        gen = _Generation(self._serial, last_s, "\0".join(ids), ends, len(ids))
        self._gens.append(gen)
        self._serial += 1
        self._sealed_n += gen.waiting
        order = np.argsort(keys, kind="stable")  # one trace's spans in the order handled
        keys = keys[order]
        at = self._keys.searchsorted(keys, "right")  # after the older spans of the same trace
        self._keys = np.insert(self._keys, at, keys)
        self._gen = np.insert(self._gen, at, gen.serial)
        self._at = np.insert(self._at, at, order.astype(np.int32))
        self._left = np.insert(self._left, at, True)

    def _drop_oldest(self) -> int:
        """Forget the oldest generation; how many of its spans still waited."""
        gen = self._gens.popleft()
        keep = self._gen != gen.serial
        self._keys, self._gen, self._at, self._left = (
            a[keep] for a in (self._keys, self._gen, self._at, self._left)
        )
        self._sealed_n -= gen.waiting
        return gen.waiting

    def _evict(self, n: int) -> int:
        """Forget the ``n`` spans that have waited longest (all sealed first); returns ``n``."""
        self.seal()
        left = n
        while left > 0 and self._gens:
            oldest = self._gens[0]
            if oldest.waiting <= left:
                left -= self._drop_oldest()
                continue
            mine = np.flatnonzero((self._gen == oldest.serial) & self._left)
            first = mine[np.argsort(self._at[mine], kind="stable")][:left]
            self._left[first] = False
            oldest.waiting -= left
            self._sealed_n -= left
            left = 0
        return n - left
