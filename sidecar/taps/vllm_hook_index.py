"""The scheduler hook's request numbers (``idx``) -> the receiver's slots, a step's members at once.

The hook numbers a pid's requests 0, 1, 2, ... (:mod:`sidecar.contracts.scheduler_wire`),
so the numbers in flight (and recently finished) lie in a narrow range that moves up.
:class:`IdxSlots` keeps a dict (any number a sender uses, the authority) and, over a
window of ``window`` numbers, an array copy of it, so a step's few hundred members
are looked up by one indexing instead of one dict lookup each. A number outside the
window (a hostile one, or a request that outlived ``window`` newer ones) is looked up
in the dict. The window moves up when a number above it arrives: its array is shifted, not
refilled from the dict. Nothing live lies above the window (a number above it moves it), and
it only moves up, so what it holds after the move is what it held in the overlap plus the new
number; a move costs one copy of the array (~10 us) however many requests are live. (A refill
from the dict cost a pass over every live request a row: ``benchmarks/hostile_cost.py``,
"hook jumps".)
"""

from __future__ import annotations

import numpy as np

__all__ = ["IdxSlots"]

_NONE = -1  # no slot


class IdxSlots:
    """A map idx -> slot; :meth:`lookup` of an int64 array of idx gives their slots (-1: none)."""

    def __init__(self, window: int = 1 << 14) -> None:
        self._slot: dict[int, int] = {}
        self._size = window
        self._base = 0  # the window holds idx base .. base + size - 1
        self._win = np.full(window, _NONE, dtype=np.int64)

    def __contains__(self, idx: int) -> bool:
        return idx in self._slot

    def __len__(self) -> int:
        return len(self._slot)

    def set(self, idx: int, slot: int) -> None:
        self._slot[idx] = slot
        if idx >= self._base + self._size:  # the numbers moved past the window: move it up
            self._move_up(idx - self._size // 2)
        if idx >= self._base:
            self._win[idx - self._base] = slot

    def pop(self, idx: int) -> None:
        del self._slot[idx]
        if 0 <= idx - self._base < self._size:
            self._win[idx - self._base] = _NONE

    def clear(self) -> None:
        """Forget every number (a restarted vLLM numbers its requests from 0 again: the window too)."""
        self._slot.clear()
        self._base = 0
        self._win.fill(_NONE)

    def lookup(self, idx: np.ndarray) -> np.ndarray:
        """The slots of ``idx`` (int64 array), -1 where a number has none."""
        rel = idx - self._base
        inside = (rel >= 0) & (rel < self._size)
        slots = self._win[np.where(inside, rel, 0)]
        slots[~inside] = _NONE
        for i in np.flatnonzero(slots < 0).tolist():  # outside the window (or unknown): the dict
            slots[i] = self._slot.get(int(idx[i]), _NONE)
        return slots

    def _move_up(self, base: int) -> None:
        """The window from ``base`` (above the current one): the overlap shifted down, the rest empty."""
        shift, size, win = base - self._base, self._size, self._win
        if shift < size:
            win[: size - shift] = win[shift:]
            win[size - shift :] = _NONE
        else:
            win.fill(_NONE)
        self._base = base
