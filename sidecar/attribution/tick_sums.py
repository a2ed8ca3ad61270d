"""A sealed tick's work rows summed per request, and those sums added to the request table's rows.

:meth:`~sidecar.attribution.requests.RequestTable.add_energy` groups a tick's rows by request
(:func:`~sidecar.attribution.groups.group_rows`), sums each group here at C speed (energy per
phase, busy time, first and last work, and, where the rule splits by model component, energy per
component, work per regressor and energy no regressor explains), and adds the sums to the rows of
the requests still live. Energies in joules, times in sidecar seconds.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sidecar.attribution.groups import Groups
from sidecar.attribution.request_rows import Rows
from sidecar.attribution.rules import Split

__all__ = ["TickSums", "add_sums", "tick_sums"]


class TickSums(NamedTuple):
    """Per group (request) of a tick: its sums; the last three None where the rule gave none."""

    phase_j: np.ndarray  # n x 3: prefill, decode, denoise
    busy_s: np.ndarray
    first_t: np.ndarray
    last_t: np.ndarray
    component_j: np.ndarray | None
    work: np.ndarray | None
    unexplained_j: np.ndarray | None

    def take(self, keep: np.ndarray) -> TickSums:
        """The sums of the groups ``keep`` selects (a bool mask)."""
        component, work, unexplained = (None if c is None else c[keep] for c in self[4:])
        return TickSums(
            self.phase_j[keep],
            self.busy_s[keep],
            self.first_t[keep],
            self.last_t[keep],
            component,
            work,
            unexplained,
        )


def tick_sums(
    g: Groups, phase: np.ndarray, split: Split, time_share: np.ndarray, t0: np.ndarray, t1: np.ndarray
) -> TickSums:
    """Each group's sums of its rows (``phase``: each row's phase index; ``split``: the rule's)."""
    n = g.codes.size
    phase_j = np.bincount(g.inverse * 3 + phase, weights=split.row_j, minlength=3 * n).reshape(n, 3)
    busy = np.bincount(g.inverse, weights=time_share, minlength=n)
    first = np.minimum.reduceat(t0[g.order], g.starts)
    last = np.maximum.reduceat(t1[g.order], g.starts)
    if split.component_j is None or split.work is None or split.unexplained_j is None:
        return TickSums(phase_j, busy, first, last, None, None, None)
    unexplained = np.bincount(g.inverse, weights=split.unexplained_j, minlength=n)
    return TickSums(
        phase_j, busy, first, last, group_sums(g, split.component_j), group_sums(g, split.work), unexplained
    )


def add_sums(rows: Rows, slots: np.ndarray, sums: TickSums) -> None:
    """Add ``sums`` to the table's ``rows`` at ``slots`` (distinct: one a request)."""
    _add_rows(rows.phase_j, slots, sums.phase_j)
    rows.busy_s[slots] += sums.busy_s
    rows.first_t[slots] = np.minimum(rows.first_t[slots], sums.first_t)
    rows.last_t[slots] = np.maximum(rows.last_t[slots], sums.last_t)
    if sums.component_j is not None and sums.work is not None and sums.unexplained_j is not None:
        _add_rows(rows.component_j, slots, sums.component_j)
        _add_rows(rows.work, slots, sums.work)
        rows.unexplained_j[slots] += sums.unexplained_j
        rows.has_components[slots] = True


def group_sums(g: Groups, rows: np.ndarray) -> np.ndarray:
    """Each group's sum of ``rows`` (n x k), added row by row in their order, as one weighted count
    (``np.add.reduceat`` of the rows sorted by group gives the same sums, its last bit apart: it
    adds in another order). A tick's groups are mostly one row each, where ``reduceat`` pays a
    segment's set-up a row (``benchmarks/seal_rows.py``)."""
    n, k = g.codes.size, rows.shape[1]
    bins = (g.inverse[:, None] * k + np.arange(k)).ravel()
    return np.bincount(bins, weights=rows.ravel(), minlength=n * k).reshape(n, k)


def _add_rows(table: np.ndarray, slots: np.ndarray, values: np.ndarray) -> None:
    """``table[slots] += values`` for distinct ``slots``: read with ``take``, which NumPy does in less
    time than the fancy index of ``+=`` does its read."""
    current = table.take(slots, axis=0)
    current += values
    table[slots] = current
