"""One energy counter per device, as the counter guard (:mod:`sidecar.counter_gains`) keeps it.

The guard keeps two: the counter it takes reads against, and one *kept aside* (left by a reset
or a rebase, in case it comes back). Everything it knows of a counter travels with it, so a
reset's energy owed is paid by the counter that owes it, whichever slot it is in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

__all__ = ["Track"]


@dataclass(slots=True)
class Track:
    """A counter per device (``value`` NaN: none)."""

    value: np.ndarray  # J, the counter's last taken read
    moved_t: np.ndarray  # when it last moved
    seen_t: np.ndarray  # when it was last read and taken
    proven: np.ndarray  # seen to move by a plausible gain since it was taken
    moves: np.ndarray  # plausible moves since it was taken by a reset or a rebase
    owed: np.ndarray  # J: a reset's energy since the restart, paid once the counter moved enough
    reset: np.ndarray  # taken by a reset whose energy is not paid yet

    @classmethod
    def empty(cls, n: int) -> Track:
        return cls(
            value=np.full(n, math.nan),
            moved_t=np.zeros(n),
            seen_t=np.zeros(n),
            proven=np.zeros(n, dtype=bool),
            moves=np.zeros(n, dtype=np.int64),
            owed=np.zeros(n),
            reset=np.zeros(n, dtype=bool),
        )

    def copy_from(self, other: Track, where: np.ndarray | int) -> None:
        """Device(s) ``where`` take ``other``'s counter."""
        for f in fields(self):
            getattr(self, f.name)[where] = getattr(other, f.name)[where]

    def start(self, i: int, t: float, raw: float, *, reset: bool, owed_j: float) -> None:
        """Device ``i`` takes a counter as it reads (a reset or a rebase): not proven until it moves."""
        self.value[i], self.moved_t[i], self.seen_t[i] = raw, t, t
        self.proven[i], self.moves[i] = False, 0
        self.reset[i], self.owed[i] = reset, owed_j
