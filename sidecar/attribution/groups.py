"""A tick's rows grouped by request: one stable sort serves every per-request sum of the tick."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Groups", "group_rows"]


@dataclass(frozen=True, slots=True)
class Groups:
    """Rows grouped by request code: ``codes`` (sorted, unique), each row's group ``inverse``, and
    ``order`` (rows sorted by group, stable) with each group's first position ``starts`` in it."""

    codes: np.ndarray
    inverse: np.ndarray
    order: np.ndarray
    starts: np.ndarray


def group_rows(req: np.ndarray) -> Groups:
    """Group a tick's rows by request code: one stable sort (codes are small integers)."""
    order = np.argsort(req, kind="stable")
    ordered = req[order]
    new = np.empty(ordered.size, dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    inverse = np.empty(req.size, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return Groups(ordered[starts], inverse, order, starts)
