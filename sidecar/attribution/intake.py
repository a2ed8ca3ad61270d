"""Work taken into the attributor: events, engine steps and rows, checked and queued as rows.

:class:`WorkIntake` is the part of :class:`~sidecar.attribution.engine.Attributor` that queues
work (the attributor sets these attributes): each event, step or block of rows becomes rows of
eight columns (request code, phase, start, end, units, steps, context tokens, timed) in ``_new`` or
``_new_steps``, which sealing merges into the pending work at its next advance. Invalid work and
work of a request already final are refused and counted (``invalid``, ``after_final``).
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from sidecar.attribution.events import StepBatch, WorkEvent, WorkRows
from sidecar.attribution.requests import RequestTable
from sidecar.attribution.step_curve import StepCurve, curve_code
from sidecar.errors import WorkEventError
from sidecar.recent_ids_sorted import SortedRecentIds

__all__ = ["WorkIntake"]

log = logging.getLogger(__name__)


class WorkIntake:
    """Queues work as rows; the attributor sets these attributes."""

    dropped: Counter[str]
    requests: RequestTable
    _finalized: SortedRecentIds[str]
    _new: list[tuple[float, float, float, float, float, float, float, float]]
    _new_steps: list[np.ndarray]  # step batches and row blocks: rows of the same 8 columns
    _curves: list[StepCurve]  # the step curves clocked rows follow (attribution/step_curve.py)
    _last_step_codes: tuple[tuple[str, ...], np.ndarray] | None  # ids -> codes, until advance

    def add_work(self, event: WorkEvent | StepBatch | WorkRows) -> bool:
        """Queue one work event, step batch or rows; invalid or post-final work is rejected and counted."""
        if isinstance(event, StepBatch):
            return self._add_step(event)
        if isinstance(event, WorkRows):
            return self._add_rows(event)
        if not self._valid(event):
            return False
        if event.request_id in self._finalized:
            self.dropped["after_final"] += 1
            return False
        code = self.requests.code(event.request_id)
        ev = event
        self._new.append((code, int(ev.phase), ev.t0_s, ev.t1_s, ev.units, ev.steps, ev.context_tokens, 0.0))
        return True

    def _valid(self, work: WorkEvent | StepBatch) -> bool:
        """Whether ``work`` passes its own checks; if not, counted ``invalid`` (and logged at debug)."""
        try:
            work.check()
        except WorkEventError as err:
            self.dropped["invalid"] += 1
            log.debug("rejected %s: %s", type(work).__name__, err)
            return False
        return True

    def _add_step(self, step: StepBatch) -> bool:
        """Queue every member of one engine step as one array append (members after final dropped)."""
        if not self._valid(step):
            return False
        codes, keep = self._step_codes(step.request_ids)
        if keep is not None:
            self.dropped["after_final"] += len(step.request_ids) - keep.size
            if not keep.size:
                return False
        rows = np.empty((codes.size, 8))
        rows[:, 0] = codes
        rows[:, 2] = step.t0_s
        rows[:, 3] = step.t1_s
        rows[:, 5] = step.steps
        rows[:, 7] = step.timed
        if keep is None:
            rows[:, 1], rows[:, 4], rows[:, 6] = step.phase, step.units, step.context_tokens
        else:
            rows[:, 1], rows[:, 4], rows[:, 6] = step.phase[keep], step.units[keep], step.context_tokens[keep]
        self._new_steps.append(rows)
        return True

    def _add_rows(self, work: WorkRows) -> bool:
        """Queue many work events as one array append; each invalid or post-final row is counted."""
        bad = work.invalid()
        self.dropped["invalid"] += int(bad.sum())
        codes, keep = self._step_codes(work.request_ids)
        if keep is not None:
            full = np.full(len(work.request_ids), -1.0)
            full[keep] = codes
            codes = full
        row_codes = codes[np.where(bad, 0, work.member)] if codes.size else np.full(len(work), -1.0)
        gone = ~bad & (row_codes < 0)
        self.dropped["after_final"] += int(gone.sum())
        ok = ~(bad | gone)
        if not ok.any():
            return False
        cols = (work.phase, work.t0_s, work.t1_s, work.units, work.steps, work.context_tokens)
        timed = np.zeros(int(ok.sum()))  # spread evenly, or following the rows' step curve
        if work.clocked is not None and work.curve is not None:
            timed[work.clocked[ok]] = curve_code(self._curves, work.curve)
        rows = np.column_stack([row_codes[ok], *(c[ok] for c in cols), timed]).astype(np.float64)
        self._new_steps.append(rows)
        return True

    def _step_codes(self, ids: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray | None]:
        """The members' request codes and, if some are final, the positions of the others.

        A request in the table is never final (finalizing removes it), so only ids without a code
        are looked up in the final ones. The receiver hands the same tuple for consecutive steps
        with the same members; its codes are reused until the next :meth:`advance` (which may
        finalize requests and so free codes).
        """
        cached = self._last_step_codes
        if cached is not None and cached[0] is ids:
            return cached[1], None
        found = self.requests.codes_of(ids)
        final: list[int] = []  # positions of members already final
        i = -1
        while True:  # only the few new members are visited (list.index searches at C speed)
            try:
                i = found.index(None, i + 1)
            except ValueError:
                break
            if ids[i] in self._finalized:
                final.append(i)
            else:
                found[i] = self.requests.code(ids[i])
        if final:
            keep = np.delete(np.arange(len(ids)), final)
            return np.array([found[k] for k in keep.tolist()], dtype=np.float64), keep
        codes = np.array(found, dtype=np.float64)
        self._last_step_codes = (ids, codes)
        return codes, None
