"""Live requests' codes and rows as two arrays sorted by code: a tick's rows found at C speed.

A request's code is given in increasing order when it is first seen, so the codes of live
requests, in the order they were given, are sorted: a new one is appended, a request that ends
leaves its row number as -1 (a hole), and the holes are dropped once they are half the entries
(amortized O(1) a request). Looking up a tick's codes is then one binary search of the array, not
one dict look-up a request (``benchmarks/seal_rows.py`` prints both). It is the request table's
only code -> row mapping (a dict beside it held ~60 bytes a live request more): one code at a time
is a binary search too, and the live rows in code order are the first-seen order.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LiveCodes"]


class LiveCodes:
    """code -> row of the live requests, looked up a batch at a time (-1: not live)."""

    __slots__ = ("_code", "_holes", "_n", "_slot")

    def __init__(self, capacity: int = 1024) -> None:
        self._code = np.empty(capacity, dtype=np.int64)  # [: _n] sorted, increasing
        self._slot = np.empty(capacity, dtype=np.int64)  # -1: that code ended (a hole)
        self._n = 0
        self._holes = 0

    def __len__(self) -> int:
        """Live codes held."""
        return self._n - self._holes

    def add(self, code: int, slot: int) -> None:
        """A new live request, its code above every code added before."""
        self._room(1)
        n = self._n
        if n and code <= self._code[n - 1]:
            raise ValueError(f"codes must increase: {code} after {int(self._code[n - 1])}")
        self._code[n], self._slot[n] = code, slot
        self._n = n + 1

    def add_run(self, first_code: int, slots: list[int]) -> None:
        """New live requests with codes ``first_code``, ``first_code + 1``, ... in rows ``slots``."""
        k = len(slots)
        if not k:
            return
        self._room(k)
        n = self._n
        if n and first_code <= self._code[n - 1]:
            raise ValueError(f"codes must increase: {first_code} after {int(self._code[n - 1])}")
        self._code[n : n + k] = np.arange(first_code, first_code + k)
        self._slot[n : n + k] = slots
        self._n = n + k

    def remove(self, codes: list[int]) -> None:
        """These live codes ended (each once)."""
        if not codes:
            return
        n = self._n
        at = np.searchsorted(self._code[:n], codes)
        self._slot[at] = -1
        self._holes += len(codes)
        if 2 * self._holes > n:
            keep = np.flatnonzero(self._slot[:n] >= 0)
            m = keep.size
            self._code[:m], self._slot[:m] = self._code[keep], self._slot[keep]
            self._n, self._holes = m, 0

    def slot_of(self, code: int) -> int:
        """The row of ``code`` (-1 where not live): one binary search."""
        n = self._n
        at = int(self._code[:n].searchsorted(code))
        return int(self._slot[at]) if at < n and self._code[at] == code else -1

    def live_slots(self) -> np.ndarray:
        """The rows of the live requests, the first seen first (by code)."""
        slots = self._slot[: self._n]
        live: np.ndarray = slots[slots >= 0]
        return live

    def slots_of(self, codes: np.ndarray) -> np.ndarray:
        """The row of each of ``codes`` (int64; -1 where not live)."""
        n = self._n
        if not n:
            return np.full(codes.size, -1, dtype=np.int64)
        live, codes = self._code[:n], codes.astype(np.int64, copy=False)  # a float code is whole
        at = np.minimum(np.searchsorted(live, codes), n - 1)
        return np.where(live[at] == codes, self._slot[at], -1)

    def _room(self, k: int) -> None:
        size = self._code.size
        if self._n + k <= size:
            return
        grown = max(2 * size, self._n + k)
        for name in ("_code", "_slot"):
            old = getattr(self, name)
            new = np.empty(grown, dtype=np.int64)
            new[: self._n] = old[: self._n]
            setattr(self, name, new)
