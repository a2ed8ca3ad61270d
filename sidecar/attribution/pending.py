"""Work waiting to be sealed, in blocks, so a tick touches only the work near it.

Work arrives roughly in time order (a tap's events of the last tick interval)
and is sealed ``settle_s`` later, so the pending work is a queue of seconds of
rows (at batch 256 and 80 steps/s, two seconds are 41,000 rows). Kept as one
array, every tick would copy and scan all of it to find the few thousand rows
of the tick being sealed. Here each merge of new work is one block with its
earliest start and latest end; sealing up to a time looks only at the blocks
that start before it, and consumed rows leave block by block.
Units: seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sidecar.attribution.tick import EventArrays

__all__ = ["EMPTY", "PendingWork"]

EMPTY = EventArrays(*(np.zeros(0, dtype=int) for _ in range(2)), *(np.zeros(0) for _ in range(5)))


@dataclass(slots=True)
class _Block:
    ev: EventArrays
    t0_min: float
    t1_max: float
    t0_max: float  # at least the latest start in it (rows starting after a tick cannot touch it)


class PendingWork:
    """Pending work events as a queue of blocks (each block one merge's rows)."""

    def __init__(self) -> None:
        self._blocks: list[_Block] = []
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    def add(self, ev: EventArrays) -> None:
        """Queue a block of new work rows."""
        if len(ev):
            self._blocks.append(_Block(ev, float(ev.t0.min()), float(ev.t1.max()), float(ev.t0.max())))
            self._rows += len(ev)

    def before(self, t_s: float) -> EventArrays:
        """Every row that starts before ``t_s`` (all work that can touch time before it), in order.

        A block that starts before ``t_s`` but runs past it gives only its rows that start before:
        the rest cannot touch a tick ending by ``t_s``, and is most of the pending work (a block
        holds a tick interval's spans, their work reaching back up to their length)."""
        parts = [
            b.ev if b.t0_max < t_s else _starting_before(b.ev, t_s) for b in self._blocks if b.t0_min < t_s
        ]
        if not parts:
            return EMPTY
        if len(parts) == 1:
            return parts[0]
        return EventArrays(
            *(np.concatenate(cols) for cols in zip(*(_columns(p) for p in parts), strict=True))
        )

    def drop_consumed(self, sealed_s: float) -> None:
        """Forget the rows that end by ``sealed_s`` (an instant row: that is before it)."""
        kept: list[_Block] = []
        for b in self._blocks:
            if b.t0_min >= sealed_s:  # nothing in it can be consumed
                kept.append(b)
                continue
            ev = b.ev
            keep = (ev.t1 > sealed_s) | ((ev.t1 == ev.t0) & (ev.t0 >= sealed_s))
            n = int(np.count_nonzero(keep))
            self._rows -= len(ev) - n
            if n == len(ev):
                kept.append(b)
            elif n:
                rest = _rows_where(ev, keep)
                kept.append(_Block(rest, float(rest.t0.min()), b.t1_max, b.t0_max))
        self._blocks = kept

    def codes(self) -> set[int]:
        """The requests that have pending work."""
        if not self._blocks:
            return set()
        return set(np.unique(np.concatenate([b.ev.req for b in self._blocks])).tolist())

    def among(self, codes: list[int]) -> np.ndarray:
        """Which of ``codes`` have pending work: a bool per code (one search over the rows, no set)."""
        if not self._blocks or not codes:
            return np.zeros(len(codes), dtype=bool)
        found: np.ndarray = np.isin(
            np.asarray(codes, dtype=np.int64), np.concatenate([b.ev.req for b in self._blocks])
        )
        return found


def _starting_before(ev: EventArrays, t_s: float) -> EventArrays:
    return _rows_where(ev, ev.t0 < t_s)


def _rows_where(ev: EventArrays, keep: np.ndarray) -> EventArrays:
    return EventArrays(*(col[keep] for col in _columns(ev)))


def _columns(ev: EventArrays) -> tuple[np.ndarray, ...]:
    return (ev.req, ev.phase, ev.t0, ev.t1, ev.units, ev.steps, ev.ctx)
