"""Work waiting to be sealed: rows not reached yet, in blocks sorted by start, and rows in hand.

Work arrives roughly in time order (a tap's events of the last tick interval) and is sealed
``settle_s`` later, so the pending work is a queue of seconds of rows (at batch 256 and 80
steps/s, two seconds are 41,000 rows; a flood of vLLM spans, two rows a span, tens of
thousands). Sealing needs only the rows that start before the last edge it seals and have not
ended by the sealed time. So each merge of new work is one block, sorted by start once; sealing
up to a time takes each block's rows that start before it as a slice (no copy of the rest),
into the rows in hand; consumed rows leave only the rows in hand. A row is thus looked at a few
times in its life, not once per tick until its block is gone.
Units: seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sidecar.attribution.tick import EventArrays

__all__ = ["EMPTY", "PendingWork"]

EMPTY = EventArrays(*(np.zeros(0, dtype=int) for _ in range(2)), *(np.zeros(0) for _ in range(6)))


@dataclass(slots=True)
class _Block:
    ev: EventArrays  # sorted by start
    at: int  # rows before this index are in hand (or consumed)

    @property
    def next_t0(self) -> float:
        return float(self.ev.t0[self.at])


class PendingWork:
    """Pending work rows: blocks not reached yet (each one merge's rows, by start) and the rows in hand."""

    def __init__(self) -> None:
        self._blocks: list[_Block] = []
        self._hand: EventArrays = EMPTY  # rows handed to sealing, not consumed yet
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    def add(self, ev: EventArrays) -> None:
        """Queue a block of new work rows."""
        if not len(ev):
            return
        t0 = ev.t0
        if t0.size > 1 and bool((t0[1:] < t0[:-1]).any()):
            order = np.argsort(t0, kind="stable")
            ev = EventArrays(*(col[order] for col in _columns(ev)))
        self._blocks.append(_Block(ev, 0))
        self._rows += len(ev)

    def before(self, t_s: float) -> EventArrays:
        """Every pending row that starts before ``t_s`` (all work that can touch time before it); it
        may also hold rows handed out before that start later (a ``t_s`` earlier than the last one's)."""
        taken: list[EventArrays] = []
        kept: list[_Block] = []
        for b in self._blocks:
            if b.next_t0 < t_s:
                k = int(np.searchsorted(b.ev.t0, t_s, side="left"))
                taken.append(EventArrays(*(col[b.at : k] for col in _columns(b.ev))))
                b.at = k
            if b.at < len(b.ev):
                kept.append(b)
        self._blocks = kept
        if taken:
            self._hand = _concat([self._hand, *taken]) if len(self._hand) else _concat(taken)
        return self._hand

    def drop_consumed(self, sealed_s: float) -> None:
        """Forget the rows that end by ``sealed_s`` (an instant row: that is before it)."""
        for b in self._blocks:  # none here has a row that ends by it, unless work came in late
            if b.next_t0 < sealed_s:
                self.before(sealed_s)
                break
        ev = self._hand
        if not len(ev):
            return
        keep = (ev.t1 > sealed_s) | ((ev.t1 == ev.t0) & (ev.t0 >= sealed_s))
        n = int(np.count_nonzero(keep))
        if n < len(ev):
            self._rows -= len(ev) - n
            self._hand = EventArrays(*(col[keep] for col in _columns(ev))) if n else EMPTY

    def _req(self) -> list[np.ndarray]:
        return [self._hand.req, *(b.ev.req[b.at :] for b in self._blocks)]

    def codes(self) -> set[int]:
        """The requests that have pending work."""
        return set(np.unique(np.concatenate(self._req())).tolist())

    def among(self, codes: list[int]) -> np.ndarray:
        """Which of ``codes`` have pending work: a bool per code (one search over the rows, no set)."""
        if not self._rows or not codes:
            return np.zeros(len(codes), dtype=bool)
        found: np.ndarray = np.isin(np.asarray(codes, dtype=np.int64), np.concatenate(self._req()))
        return found


def _concat(parts: list[EventArrays]) -> EventArrays:
    if len(parts) == 1:
        return parts[0]
    return EventArrays(*(np.concatenate(cols) for cols in zip(*(_columns(p) for p in parts), strict=True)))


def _columns(ev: EventArrays) -> tuple[np.ndarray, ...]:
    return (ev.req, ev.phase, ev.t0, ev.t1, ev.units, ev.steps, ev.ctx, ev.timed)
