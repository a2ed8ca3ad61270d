"""The last N distinct ids seen, to refuse a repeat: their 64-bit hashes in two fixed arrays.

An id is kept as ``hash(id)`` only (8 bytes), in a ring of the last ``most`` hashes (the order)
and in an open-addressing table twice that size (linear probing; an id forgotten is deleted by
shifting its followers back, so no tombstones pile up). Between 24 and 40 bytes an id, allocated
once, where a ``set`` + ``deque`` of the ids themselves took ~136 bytes a 36-character id
(the string, a set slot, a deque slot), held the strings alive after everything else let go
of them and, a flood later, left CPython's small-object arenas pinned by them
(``benchmarks/memory.py --heap``). The answers are the same: an id is remembered until
``most`` newer distinct ids have been added, then forgotten oldest first.

Two different ids with the same 64-bit hash would be taken for one (the second refused as a
repeat). Python hashes ``str`` and ``bytes`` with SipHash under a key drawn at each start
(unless ``PYTHONHASHSEED`` fixes it), so a sender cannot choose ids that collide, and two
ids collide by chance about once in 10**14 look-ups of a table of 100,000.
"""

from __future__ import annotations

from array import array
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["RecentIds"]

_K = TypeVar("_K", bound=Hashable)
_EMPTY = 0  # a free table slot
_ZERO = 0x5BD1E9955BD1E995  # stands for a hash of 0 ("", b"", 0): as unlikely to meet as any other


class RecentIds(Generic[_K]):
    """A bounded set of recent ids (by hash), forgetting the oldest first."""

    __slots__ = ("_count", "_mask", "_next", "_ring", "_table", "most")

    def __init__(self, most: int) -> None:
        if most < 1:
            raise ValueError(f"RecentIds needs room for at least one id, got {most}")
        self.most = most
        self._ring = array("q", bytes(8 * most))  # the hashes in the order added (a ring)
        self._next = 0  # where the next hash goes in the ring (the oldest once full)
        self._count = 0
        size = 1 << max(3, (2 * most - 1).bit_length())  # a power of two >= 2 * most: half empty
        self._table = array("q", bytes(8 * size))
        self._mask = size - 1

    def __contains__(self, key: object) -> bool:
        h = hash(key) or _ZERO
        table, mask = self._table, self._mask
        i = h & mask
        while True:
            slot = table[i]
            if slot == h:
                return True
            if slot == _EMPTY:
                return False
            i = (i + 1) & mask

    def __len__(self) -> int:
        return self._count

    def add(self, key: _K) -> None:
        """Remember ``key`` (a repeat changes nothing); beyond ``most`` ids the oldest is forgotten."""
        self.add_new(key)

    def add_new(self, key: _K) -> bool:
        """:meth:`add`, in the same look-up as ``key in self``: True if ``key`` was not remembered."""
        h = hash(key) or _ZERO
        table, mask = self._table, self._mask
        i = h & mask
        while True:
            slot = table[i]
            if slot == h:
                return False
            if slot == _EMPTY:
                break
            i = (i + 1) & mask
        ring, k = self._ring, self._next
        if self._count == self.most:
            self._forget(ring[k])  # may move entries: find the free slot again below
            i = h & mask
            while table[i] != _EMPTY:
                i = (i + 1) & mask
        else:
            self._count += 1
        table[i] = h
        ring[k] = h
        self._next = k + 1 if k + 1 < self.most else 0
        return True

    def _forget(self, h: int) -> None:
        """Delete hash ``h`` from the table; later entries of its probe run shift back into the gap."""
        table, mask = self._table, self._mask
        gap = h & mask
        while table[gap] != h:
            gap = (gap + 1) & mask
        j = gap
        while True:
            j = (j + 1) & mask
            slot = table[j]
            if slot == _EMPTY:
                break
            home = slot & mask
            # the entry at j may move to the gap unless its home lies cyclically in (gap, j]
            if (j - home) & mask >= (j - gap) & mask:
                table[gap] = slot
                gap = j
        table[gap] = _EMPTY
