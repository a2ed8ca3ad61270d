"""A tick's rows grouped by request: one stable sort serves every per-request sum of the tick."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Groups", "group_rows", "stable_order"]

_RADIX_SPAN = 1 << 16  # codes within this of each other sort as 16-bit keys


@dataclass(frozen=True, slots=True)
class Groups:
    """Rows grouped by request code: ``codes`` (sorted, unique), each row's group ``inverse``, and
    ``order`` (rows sorted by group, stable) with each group's first position ``starts`` in it."""

    codes: np.ndarray
    inverse: np.ndarray
    order: np.ndarray
    starts: np.ndarray


def group_rows(req: np.ndarray, sort: Callable[[np.ndarray], np.ndarray] | None = None) -> Groups:
    """Group a tick's rows by request code: one stable sort (codes are small integers), by
    :func:`stable_order` unless another ``sort`` giving the same order is named (a benchmark's)."""
    order = stable_order(req) if sort is None else sort(req)
    ordered = req[order]
    new = np.empty(ordered.size, dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    inverse = np.empty(req.size, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return Groups(ordered[starts], inverse, order, starts)


def stable_order(codes: np.ndarray) -> np.ndarray:
    """``np.argsort(codes, kind="stable")`` of whole-number codes. A tick's codes are those of the
    requests in flight, seldom more than 65,536 apart: as offsets from the least they are 16-bit
    keys, which NumPy sorts by radix (a fourth of the time of its merge sort of 64-bit ones;
    ``benchmarks/seal_rows.py``). The order is the same either way."""
    if codes.size < 2:
        return np.arange(codes.size)
    low = codes.min()
    if codes.max() - low < _RADIX_SPAN:
        return np.argsort((codes - low).astype(np.uint16), kind="stable")
    return np.argsort(codes, kind="stable")
