"""The last N distinct ids seen, to refuse a repeat: their 64-bit hashes in two flat arrays.

An id is remembered until ``most`` newer distinct ids have been added, then forgotten oldest
first. What is kept is the id's ``hash()`` (SipHash with the process's random key), not the
id: a ring of the last ``most`` hashes in arrival order, and an open-addressing table of the
same hashes to look them up (linear probing, at most half full, doubled as ids come;
deletion by backward shift). That is 24 to 40 bytes an id with no Python object per id; the
set and deque of strings this replaces cost ~150 (a 30-character id's string alone is 80):
the sidecar's tables of final ids (100,000), handled request ids and span keys held ~17 MB
under a span flood (tracemalloc); ``benchmarks/memory.py``'s peak fell 194 -> 188 MB. A
look-up costs ~2x the set's, an add with its eviction ~3x (~1-2 us); ``ingest_grpc.py`` did
not move beyond its run-to-run noise. The table was at most a quarter full at first (40 to 72
bytes an id): half full, a table of 100,000 ids is 2 MB of slots, not 4, for look-ups that
probe a few more slots on average (at most half full, a run stays short).

Two different ids with the same 64-bit hash would be taken for one (a request's late work
refused as after final, or a span as a duplicate: counted as such). Against a full table of
100,000, at a thousand new ids a second (a busy node) that is once in ~6,000 years; a client
cannot aim for it (the hash key is random per process).
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["RecentIds", "remember"]

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


def remember(table: OrderedDict[_K, _V], key: _K, value: _V, most: int) -> bool:
    """Keep ``value`` under ``key`` in an insertion-ordered ``table`` of at most ``most`` entries;
    True if that pushed the oldest entry out."""
    table[key] = value
    if len(table) > most:
        table.popitem(last=False)  # one in, at most one out
        return True
    return False


_EMPTY = 0  # a table slot without a hash
_ZERO = -0x61C8864680B583EB  # what an id whose hash is 0 is stored as (any value but 0 would do)


class RecentIds(Generic[_K]):
    """A bounded set of recent ids, forgetting the oldest first."""

    __slots__ = ("_mask", "_n", "_next", "_ring", "_table", "most")

    def __init__(self, most: int) -> None:
        if most < 1:
            raise ValueError(f"RecentIds needs room for at least one id, got {most}")
        self.most = most
        self._mask = 15
        self._table = array("q", bytes(8 * 16))  # grows to keep at most half full: short probe runs
        self._ring = array("q")  # the hashes in arrival order; once full, the oldest at _next
        self._next = 0
        self._n = 0

    def __contains__(self, key: object) -> bool:
        h = hash(key) or _ZERO
        return self._table[self._slot(h)] == h

    def __len__(self) -> int:
        return self._n

    def add(self, key: _K) -> None:
        """Remember ``key`` (a repeat changes nothing); beyond ``most`` ids the oldest is forgotten."""
        self.add_new(key)

    def add_new(self, key: _K) -> bool:
        """:meth:`add`, and say whether ``key`` was new (one call for ``key in self`` and ``add``)."""
        h = hash(key) or _ZERO
        table = self._table
        i = self._slot(h)
        if table[i] == h:
            return False
        if self._n == self.most:
            self._remove(self._ring[self._next])  # the oldest; shifting its run may have moved i
            i = self._slot(h)
            self._ring[self._next] = h
            self._next = (self._next + 1) % self.most
        else:
            self._n += 1
            self._ring.append(h)
            if 2 * self._n > self._mask:
                self._grow()
                return True  # placed by _grow
        table[i] = h
        return True

    def _slot(self, h: int) -> int:
        """Where ``h`` is in the table, or the empty slot that ends its probe run."""
        table, mask = self._table, self._mask
        i = h & mask
        while True:
            found = table[i]
            if found in (h, _EMPTY):
                return i
            i = (i + 1) & mask

    def _grow(self) -> None:
        """A table twice the size, with every kept hash put back (the newest included)."""
        size = 2 * (self._mask + 1)
        self._table, self._mask = array("q", bytes(8 * size)), size - 1
        table = self._table
        for h in self._ring:  # distinct hashes: each lands on the empty slot ending its run
            table[self._slot(h)] = h

    def _remove(self, h: int) -> None:
        """Take ``h`` out of the table, shifting back the entries of its probe run that it displaced."""
        table, mask = self._table, self._mask
        i = h & mask
        while table[i] != h:
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            found = table[j]
            if found == _EMPTY:
                break
            home = found & mask
            if (home <= i < j) or (i < j < home) or (j < home <= i):  # home not in (i, j]: move back
                table[i] = found
                i = j
        table[i] = _EMPTY
