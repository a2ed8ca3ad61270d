"""The last N distinct ids, looked up and added a batch at a time: their hashes, kept sorted.

What is kept is an id's ``hash()`` (SipHash with the process's random key), not the id. The
newest ids' hashes (up to ``most // 8`` of them: a *generation*) are a sorted array, where they
came in batches, and a Python set, where one at a time; a full
generation is merged into one sorted array of the older hashes (a memory move, no hashing), each
with its generation's number in a byte beside it, and the oldest generation is dropped once the
older ones hold ``most`` without it. So an id is remembered while fewer than ``most`` newer
distinct ids have come, and forgotten, its whole generation at once, before ``most + 2 * (most //
8)`` have: a bound, not an exact count. About 12 bytes an id, by arithmetic: 9 in the array, 2
to 4 in a bit filter (below); no Python object per id that came in a batch (an id added one at a
time: ~77 bytes in the set until its generation is sealed).

The sidecar's hot paths look up and add a whole export's or tick's ids at once
(:meth:`SortedRecentIds.add_many`, :meth:`SortedRecentIds.contains_many`): one vectorised search
of each array and a set test each. One at a time, a look-up tests the set, then a bit filter
of the arrays' hashes (16 to 32 bits an id: most misses end there), then searches the arrays.
:class:`sidecar.recent_ids.RecentIds` (an open-addressing table and an exact first-in-first-out
ring, stdlib only) stays for the proxy, which never imports NumPy, and for the scheduler hook's
claims (one id at a time); this file's figures against it: ``benchmarks/recent_ids.py``.

Two different ids with the same 64-bit hash would be taken for one (a request's late work
refused as after final, or a span as a duplicate: counted as such). Against a full table of
100,000, at a thousand new ids a second (a busy node) that is once in ~6,000 years; a client
cannot aim for it (the hash key is random per process).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

import numpy as np

__all__ = ["ADDED", "GENERATIONS", "KNOWN", "LEFT_OUT", "SortedRecentIds"]

_K = TypeVar("_K", bound=Hashable)

GENERATIONS = 8  # a generation holds most // GENERATIONS ids: the bound on how many more are kept
ADDED, KNOWN, LEFT_OUT = 0, 1, 2  # what add_many says of each key


class SortedRecentIds(Generic[_K]):
    """A bounded set of recent ids, forgetting the oldest first (a generation at a time)."""

    __slots__ = ("_bits", "_chunk", "_gen", "_mask", "_new", "_new_sorted", "_old", "_old_gen", "most")

    def __init__(self, most: int) -> None:
        if most < 1:
            raise ValueError(f"SortedRecentIds needs room for at least one id, got {most}")
        self.most = most
        self._chunk = max(most // GENERATIONS, 1)  # ids a generation holds
        # the newest generation's hashes: those added one at a time in a set, a batch's sorted in an
        # array (a flood's ids come in batches: no Python int held an id)
        self._new: set[int] = set()
        self._new_sorted = np.empty(0, dtype=np.int64)
        self._old = np.empty(0, dtype=np.int64)  # older generations' hashes, sorted
        self._old_gen = np.empty(0, dtype=np.uint8)  # each one's generation (mod 256)
        self._gen = 0  # the newest generation's number (mod 256)
        # a bit per (hash & _mask), set for each hash in the arrays (16 to 32 bits an id, sized at each
        # seal for the older ones and a generation more: a miss, as most look-ups one at a time are,
        # is told without a search at least 15 times in 16)
        self._bits, self._mask = _filter(np.empty(0, dtype=np.int64), self._chunk)

    def __contains__(self, key: object) -> bool:
        return self._has(hash(key))

    def _has(self, h: int) -> bool:
        if h in self._new:
            return True
        i = h & self._mask
        if not self._bits[i >> 3] >> (i & 7) & 1:
            return False
        return _in(self._old, h) or _in(self._new_sorted, h)

    def _newest(self) -> int:
        """How many ids the newest generation holds."""
        return len(self._new) + int(self._new_sorted.size)

    def __len__(self) -> int:
        return self._newest() + int(self._old.size)

    def add(self, key: _K) -> None:
        """Remember ``key`` (a repeat changes nothing, nor refreshes its place)."""
        self.add_new(key)

    def add_new(self, key: _K) -> bool:
        """:meth:`add`, and say whether ``key`` was new (one call for ``key in self`` and ``add``)."""
        h = hash(key)
        if self._has(h):
            return False
        self._new.add(h)
        if self._newest() >= self._chunk:
            self._seal()
        return True

    def contains_many(self, keys: Sequence[_K]) -> np.ndarray:
        """``key in self`` for each of ``keys`` (bool array), with one search of the older ids."""
        return self._contains(_hashes(keys))

    def add_many(self, keys: Sequence[_K], most_new: int | None = None) -> np.ndarray:
        """:meth:`add_new` for each of ``keys`` in turn, as that many calls would, with room for
        ``most_new`` new ones (all by default): an int8 array of :data:`ADDED` (new, now kept),
        :data:`KNOWN` (kept already at its turn, earlier in the batch too) and :data:`LEFT_OUT`
        (new, but no room left: not kept, as if never offered)."""
        h = _hashes(keys)
        codes = np.full(h.size, LEFT_OUT, dtype=np.int8)
        left = h.size if most_new is None else max(most_new, 0)
        i = 0
        while i < h.size:  # up to the next seal (which may forget some ids) at a time: once, mostly
            rest = h[i:]
            unique, first, inverse = np.unique(rest, return_index=True, return_inverse=True)
            code = np.where(self._contains(unique), KNOWN, LEFT_OUT).astype(np.int8)
            fresh = np.flatnonzero(code == LEFT_OUT)
            taken = fresh[np.argsort(first[fresh], kind="stable")][: min(self._chunk - self._newest(), left)]
            code[taken] = ADDED
            sealing = self._newest() + taken.size >= self._chunk
            end = int(first[taken].max()) + 1 if sealing else rest.size  # the turns this table answers
            answers = code[inverse[:end]]
            repeats = first[inverse[:end]] != np.arange(end)
            answers[repeats & (answers == ADDED)] = KNOWN  # added at its first turn: known after
            codes[i : i + end] = answers
            self._add_sorted(unique[np.sort(taken)])  # unique is sorted: so is this
            left -= taken.size
            if not sealing:
                break
            self._seal()
            i += end
        return codes

    def _add_sorted(self, fresh: np.ndarray) -> None:
        """Keep ``fresh`` (sorted hashes, none kept yet) in the newest generation's array."""
        if not fresh.size:
            return
        new = self._new_sorted
        self._new_sorted = np.insert(new, new.searchsorted(fresh), fresh) if new.size else fresh.copy()
        slot = fresh & self._mask
        bit = np.left_shift(1, slot & 7).astype(np.uint8)
        np.bitwise_or.at(np.frombuffer(self._bits, dtype=np.uint8), slot >> 3, bit)  # the filter, in place

    def _contains(self, h: np.ndarray) -> np.ndarray:
        """Which hashes are kept: the set's, then the bit filter's candidates searched in the arrays."""
        found = np.zeros(h.size, dtype=bool)
        if self._old.size or self._new_sorted.size:
            slot = h & self._mask
            bits = np.frombuffer(self._bits, dtype=np.uint8)
            maybe = np.flatnonzero((bits[slot >> 3] >> (slot & 7)) & 1)
            for kept in (self._old, self._new_sorted):
                if kept.size:
                    at = np.minimum(kept.searchsorted(h[maybe]), kept.size - 1)
                    found[maybe] |= kept[at] == h[maybe]
        if self._new:
            newest = self._new
            found |= np.fromiter(map(newest.__contains__, h.tolist()), dtype=bool, count=h.size)
        return found

    def _seal(self) -> None:
        """The newest generation into the sorted older array; the oldest dropped while the rest
        of the older ones hold ``most`` ids."""
        one_by_one = np.fromiter(self._new, dtype=np.int64, count=len(self._new))
        sealed = np.sort(np.concatenate([one_by_one, self._new_sorted]))
        self._new, self._new_sorted = set(), np.empty(0, dtype=np.int64)
        self._gen = (self._gen + 1) % 256
        at = self._old.searchsorted(sealed)
        self._old = np.insert(self._old, at, sealed)
        self._old_gen = np.insert(self._old_gen, at, np.uint8(self._gen))
        kept = -(-self.most // self._chunk)  # generations that hold at least `most` ids
        if self._old.size >= (kept + 1) * self._chunk:
            oldest = (self._gen - kept) % 256
            keep = self._old_gen != oldest
            self._old, self._old_gen = self._old[keep], self._old_gen[keep]
        self._bits, self._mask = _filter(self._old, self._chunk)


def _filter(kept: np.ndarray, more: int) -> tuple[bytearray, int]:
    """A bit filter with each of ``kept`` hashes' bit set and room for ``more``: its bytes (a
    bytearray: a batch's bits are set in place) and its mask (16 to 32 bits a hash)."""
    slots = 1 << (16 * (kept.size + more)).bit_length()  # a power of two
    marks = np.zeros(slots, dtype=bool)
    marks[kept & (slots - 1)] = True
    return bytearray(np.packbits(marks, bitorder="little").tobytes()), slots - 1


def _in(kept: np.ndarray, h: int) -> bool:
    """Whether the sorted array ``kept`` holds ``h``."""
    if not kept.size:
        return False
    at = int(kept.searchsorted(h))
    return at < kept.size and int(kept[at]) == h


def _hashes(keys: Sequence[object]) -> np.ndarray:
    return np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys))
