"""Sealing ticks: pending work merged, each tick cut out, split by the rule, its shares added.

:class:`TickSealer` is the half of :class:`~sidecar.attribution.engine.Attributor`
that turns work and counter edges into per-request energy; the attributor takes
work in and advances, :class:`~sidecar.attribution.lifecycle.RequestLifecycle` ends
requests. New work is merged once per advance: rows for time already sealed are
dropped and counted (``late``; clipped at the sealed edge: ``late_clipped``), rows
claimed too far ahead (``future``) or beyond ``max_pending_rows`` (``pending_cap``)
too, and their requests marked as having lost work. Busy ticks wait while the rule
learns (held), bounded in ticks, rows and time. Energies in joules, times in seconds.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from sidecar.attribution.events import Phase
from sidecar.attribution.groups import Groups, group_rows
from sidecar.attribution.pending import PendingWork
from sidecar.attribution.requests import RequestTable
from sidecar.attribution.rules import SplitRule
from sidecar.attribution.step_curve import StepCurve, curve_clip
from sidecar.attribution.tick import EventArrays, TickWork, cut_tick, keep_rest
from sidecar.attribution.totals import Totals

__all__ = ["TickSealer"]

_PHASE_LABELS = (Phase.PREFILL.label, Phase.DECODE.label, Phase.DENOISE.label)


class TickSealer:
    """Seals ticks and shares their energy; the attributor sets these attributes."""

    rule: SplitRule
    model: str
    requests: RequestTable
    totals: Totals
    dropped: Counter[str]
    max_pending_rows: int | None
    max_future_s: float
    _pending: PendingWork
    _sealed_t: float | None
    _new: list[tuple[float, float, float, float, float, float, float, float]]
    _new_steps: list[np.ndarray]
    _held: list[tuple[TickWork, np.ndarray]]
    _curves: list[StepCurve]

    def _release_held(self) -> None:
        """Split the held ticks now; without a fit they go by the fallback rule, and their requests say so."""
        fallback = not self.rule.ready
        for tick, e_dev in self._held:
            self._split(tick, e_dev)
            if fallback:
                self.requests.mark_warmup(np.unique(tick.req))
        self._held = []

    def _take_new_rows(self) -> np.ndarray:
        """The work rows queued since the last merge, as one (n, 8) array; the queues emptied."""
        arr = np.vstack([np.asarray(self._new, dtype=float).reshape(-1, 8), *self._new_steps])
        self._new, self._new_steps = [], []
        return arr

    def _cap_new_rows(self) -> None:
        """Before the first counter edge no merge refuses work over ``max_pending_rows``: the rows
        beyond it are refused here instead, counted (``pending_cap``) and their requests' work lost."""
        cap = self.max_pending_rows
        n = len(self._new) + sum(len(rows) for rows in self._new_steps)
        if cap is None or n <= cap:
            return
        arr = self._take_new_rows()
        self._new_steps = [arr[:cap]]
        self.dropped["pending_cap"] += n - cap
        self._mark_lost(arr[cap:, 0].astype(np.int64))

    def _merge_new(self, seal_until_s: float) -> None:
        if not self._new and not self._new_steps:
            return
        arr = self._take_new_rows()
        req, phase = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64)
        t0, t1, units, steps, ctx, timed = arr[:, 2], arr[:, 3], arr[:, 4], arr[:, 5], arr[:, 6], arr[:, 7]
        sealed = self._sealed_t
        assert sealed is not None
        gone = (t1 < sealed) | ((t1 == sealed) & (t0 < sealed))
        if gone.any():
            self.dropped["late"] += int(gone.sum())
            self._mark_lost(req[gone])
        future = ~gone & (t1 > seal_until_s + self.max_future_s)
        if future.any():
            self.dropped["future"] += int(future.sum())
            self._mark_lost(req[future])
            gone |= future
        room = None if self.max_pending_rows is None else self.max_pending_rows - len(self._pending)
        if room is not None and int((~gone).sum()) > room:
            over = np.flatnonzero(~gone)[max(room, 0) :]  # the newest rows beyond the cap
            self.dropped["pending_cap"] += int(over.size)
            self._mark_lost(req[over])
            gone[over] = True
        clip = ~gone & (t0 < sealed)
        if clip.any():  # its part before the sealed edge is dropped: the request's energy is short too
            self.dropped["late_clipped"] += int(clip.sum())
            self._mark_lost(req[clip])
            curve_clip(self._curves, (t0, t1, units, steps, ctx, timed), np.flatnonzero(clip), sealed)
        ok = ~gone
        cols = (req, phase, t0, t1, units, steps, ctx, timed)
        self._pending.add(EventArrays(*(col[ok] for col in cols)))

    def _mark_lost(self, codes: np.ndarray) -> None:
        self.requests.mark_lost(np.unique(codes))

    def _seal(self, window: EventArrays, t1: float, energy_j: float, energy_dev_j: np.ndarray) -> None:
        assert self._sealed_t is not None
        tick = cut_tick(window, self._sealed_t, t1, energy_j, self._curves)
        keep_rest(window, tick)  # a clocked row goes on with what this tick did not take
        self.rule.observe(tick)
        if not tick.idle and (self._held or not self.rule.ready):
            self._held.append((tick, energy_dev_j))  # split once the rule has learned
            return
        self._split(tick, energy_dev_j)

    def _split(self, tick: TickWork, energy_dev_j: np.ndarray) -> None:
        energy_j, t1 = tick.energy_j, tick.t1_s
        if tick.idle:
            idle_j = energy_j
        else:
            split = self.rule.split(tick)
            idle_j = split.idle_j
            groups = group_rows(tick.req)
            slots = self.requests.add_energy(
                tick.req, tick.phase, split, tick.time_share, tick.a, tick.b, groups
            )
            self._add_model_energy(t1, groups, slots, tick.phase, split.row_j)
        dev_total = float(energy_dev_j.sum())
        idle_dev = energy_dev_j * (idle_j / dev_total) if dev_total > 0 else np.zeros_like(energy_dev_j)
        self.totals.add_tick(t1, energy_j, idle_j, idle_dev)
        self.totals.add_idle_label(self.model, idle_j)

    def _add_model_energy(
        self, t_s: float, groups: Groups, slots: np.ndarray, phase: np.ndarray, row_j: np.ndarray
    ) -> None:
        n = groups.codes.size
        one = self.requests.one_model(slots)  # the usual case: one model served, named by all
        models = [one] if one is not None else self.requests.models_at(slots, self.model)
        names = dict.fromkeys(models)  # in order of first appearance
        if len(names) == 1:
            by_model = {models[0]: np.bincount(phase, weights=row_j, minlength=3)}
        else:  # in flight (no info yet: the default model) and finishing requests: sums per model
            per = np.bincount(groups.inverse * 3 + phase, weights=row_j, minlength=3 * n).reshape(n, 3)
            at = {name: k for k, name in enumerate(names)}  # a dict: list.index was O(names) a request
            of_group = np.fromiter(map(at.__getitem__, models), np.int64, n)
            sums = [np.bincount(of_group, weights=per[:, p], minlength=len(names)) for p in range(3)]
            by_model = dict(zip(names, np.column_stack(sums), strict=True))
        for model, joules in by_model.items():
            for label, j in zip(_PHASE_LABELS, joules.tolist(), strict=True):
                if j:
                    self.totals.add_model_energy(t_s, model, label, j)

    def _drop_consumed(self) -> None:
        if self._sealed_t is not None:
            self._pending.drop_consumed(self._sealed_t)
