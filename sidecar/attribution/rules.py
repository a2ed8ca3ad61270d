"""Split rules: how one tick's measured energy is shared by the work in it.

Every rule returns non-negative per-event energies that, with the tick's idle
part, add up to the tick's measured energy exactly (conservation by
construction: a rule only chooses *weights*).

* ``fitted`` (default): the fitted model's terms, each shared by its own key —
  the measured idle floor by equal time shares, the per-step cost by equal step
  shares, token and attention costs to the request that caused them — then
  scaled so the tick's measured energy is met. The floor times the idle part
  of a busy tick stays idle. While the model has not yet seen
  enough busy ticks the attributor holds busy ticks back and splits them
  once the first fit exists. If it never does (the warm-up bound), the held ticks
  get what can be said without coefficients: the measured floor times the busy
  time by equal time shares, the floor times the idle time stays idle, and what
  the tick drew above the floor goes by tokens (by tokens alone while no floor
  has been measured).
* ``tokens``: by tokens (or denoise work units) processed in the tick.
* ``output-tokens``: by decode (output) tokens in the tick — the ML.ENERGY
  benchmark's "J/token x output tokens", applied per tick.
* ``equal``: every request in the tick gets the same share.

Rules other than ``fitted`` give no idle part inside a busy tick. When a rule's
weights are all zero (say, only prefill in an ``output-tokens`` tick) it falls
back to equal time shares, then to equal shares.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from sidecar.attribution.fit import EnergyModelFit, work_features
from sidecar.attribution.floor import FloorEstimate
from sidecar.attribution.records import FitSnapshot
from sidecar.attribution.simple_rules import TINY, EqualRule, OutputTokensRule, TokensRule, shares
from sidecar.attribution.split import COMPONENTS, Split, SplitRule
from sidecar.attribution.step_time import StepGroups, StepTimeFit, step_groups
from sidecar.attribution.tick import TickWork

__all__ = [
    "COMPONENTS",
    "RULES",
    "EqualRule",
    "FittedRule",
    "OutputTokensRule",
    "Split",
    "SplitRule",
    "TokensRule",
    "make_rule",
]


class FittedRule:
    name = "fitted"

    def __init__(self, fit: EnergyModelFit | None = None, step_time: bool = True) -> None:
        self.fit = fit or EnergyModelFit()
        self.step_time = StepTimeFit() if step_time else None  # None: tokens alone (fit_step_weight)
        self._steps: tuple[TickWork, StepGroups] | None = None  # the last tick's steps: observe, then split

    @property
    def ready(self) -> bool:
        """A fit exists (records split while it is ill-conditioned say so in ``fit_quality``)."""
        return self.fit.ready

    def observe(self, tick: TickWork) -> None:
        if tick.idle:
            self.fit.observe_idle(tick.t1_s, tick.duration_s, tick.energy_j)
        else:
            work = self._weighed(tick, work_features(tick))
            if self.step_time is not None:
                self.step_time.add(self._steps_of(tick))
            self.fit.add(work.sum(axis=0), tick.duration_s, tick.energy_j, tick.t1_s)

    def snapshot(self) -> FitSnapshot:
        """The fit's snapshot with the step-time fit's spread."""
        spread = self.step_time.spread if self.step_time is not None else 0.0
        return replace(self.fit.snapshot(), step_time_spread=spread)

    def _steps_of(self, tick: TickWork) -> StepGroups:
        if self._steps is None or self._steps[0] is not tick:
            self._steps = (tick, step_groups(tick))
        return self._steps[1]

    def _weighed(self, tick: TickWork, work: np.ndarray) -> np.ndarray:
        """``work`` (the tick's :func:`work_features`), a timed step's rows weighed by its duration ratio."""
        if self.step_time is None:
            return work
        weighed: np.ndarray = work * self.step_time.ratios(self._steps_of(tick))[:, None]
        return weighed

    def _weighing_moved_j(
        self, energy_j: float, work: np.ndarray, floor_j: np.ndarray, idle_j: float, row_j: np.ndarray
    ) -> np.ndarray | float:
        """Per row, what weighing steps by their durations moved: ``row_j`` against the same split
        of the tick (the split's ``floor_j`` per row and ``idle_j``) with every step priced by its
        tokens alone, ``work`` (0 where no ratio differs from 1)."""
        if self.step_time is None or self.step_time.coef is None or self.fit.coef is None:
            return 0.0
        plain = floor_j + work @ self.fit.coef.work
        total = float(plain.sum()) + idle_j
        if not total > TINY or not np.isfinite(total):
            return 0.0
        moved: np.ndarray = np.abs(row_j - plain * (energy_j / total))
        return moved

    def interval_j(
        self, energy_j: float, work: np.ndarray, unexplained_j: float
    ) -> tuple[float, float] | None:
        """Coefficient uncertainty (1.96 sd of the request's work priced by the fit) plus the
        energy the model did not explain and the scaling to the measurement moved onto it, and
        what weighing its steps by their durations moved (``Split.unexplained_j``)."""
        if self.fit.coef is None:
            return None
        half_j = 1.96 * self.fit.interval_sd_j(work) + unexplained_j
        return max(energy_j - half_j, 0.0), energy_j + half_j

    def intervals_j(
        self, energy_j: np.ndarray, work: np.ndarray, unexplained_j: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`interval_j` of each row, with the same floating-point operations."""
        if self.fit.coef is None:
            return None
        half_j = 1.96 * self.fit.interval_sd_many_j(work) + unexplained_j
        return np.maximum(energy_j - half_j, 0.0), energy_j + half_j

    def quality(self) -> str:
        fit = self.fit
        if fit.coef is None:
            return "warmup"
        floor = fit.floor.reading(fit.now_s)
        if floor.source == "none":
            return "floor-unmeasured"
        if fit.held:
            return "held"
        if not fit.ok:
            return "ill-conditioned"
        return "floor-stale" if floor.stale else "ok"

    def split(self, tick: TickWork) -> Split:
        coef = self.fit.coef
        if coef is None:
            return self._warmup_split(tick)
        plain = work_features(tick)
        work = self._weighed(tick, plain)
        c = coef.work
        comp = np.column_stack(
            [
                coef.floor_w * tick.time_share,
                c[0] * work[:, 0],
                c[1] * work[:, 1],
                c[2] * work[:, 2],
                c[3] * work[:, 3] + c[4] * work[:, 4],
                c[5] * work[:, 5],
            ]
        )
        idle_model = coef.floor_w * max(tick.duration_s - tick.busy_s, 0.0)
        rows_model = comp.sum(axis=1)
        total = float(rows_model.sum()) + idle_model
        if not float(rows_model.sum()) > TINY or not np.isfinite(total):
            return TokensRule().split(tick)
        factor = tick.energy_j / total
        row_j = rows_model * factor
        moved_j = self._weighing_moved_j(tick.energy_j, plain, comp[:, 0], idle_model, row_j)
        unexplained_j = np.abs(row_j - rows_model) + moved_j
        return Split(row_j, idle_model * factor, comp * factor, work * factor, unexplained_j)

    def _warmup_split(self, tick: TickWork) -> Split:
        """No coefficients yet: the measured floor by equal time shares, what the tick drew above it by
        tokens; without a measured floor, by tokens alone."""
        floor_w = self.fit.floor.power_w(self.fit.now_s)
        tokens = TokensRule().split(tick)
        if floor_w is None or not floor_w > 0.0:
            return tokens
        floor_j = min(floor_w * tick.busy_s, tick.energy_j)
        idle_j = min(floor_w * max(tick.duration_s - tick.busy_s, 0.0), tick.energy_j - floor_j)
        above_j = tick.energy_j - floor_j - idle_j
        share = shares(tick.time_share)
        if share is None:
            return tokens
        scale = above_j / tick.energy_j if tick.energy_j > 0 else 0.0
        return Split(floor_j * share + tokens.row_j * scale, idle_j)


RULES = ("fitted", "tokens", "output-tokens", "equal")


def make_rule(
    name: str,
    *,
    fit_window_ticks: int = 600,
    fit_warmup_ticks: int = 50,
    floor: FloorEstimate | None = None,
    max_condition: float = 1000.0,
    fit_rows_of_ticks: int = 5,
    step_weight: str = "duration",
) -> SplitRule:
    """The rule called ``name`` (one of :data:`RULES`); ``step_weight`` (knob ``fit_step_weight``):
    ``duration``, the fitted rule weighs a timed step's work by its measured over its predicted
    duration (:mod:`.step_time`); otherwise by its tokens alone."""
    if name == "fitted":
        return FittedRule(
            EnergyModelFit(
                window=fit_window_ticks,
                min_busy_ticks=fit_warmup_ticks,
                floor=floor,
                max_condition=max_condition,
                rows_of_ticks=fit_rows_of_ticks,
            ),
            step_time=step_weight == "duration",
        )
    simple: dict[str, Callable[[], SplitRule]] = {
        "tokens": TokensRule,
        "output-tokens": OutputTokensRule,
        "equal": EqualRule,
    }
    if name not in simple:
        raise ValueError(f"unknown split rule {name!r}; choose one of {', '.join(RULES)}")
    return simple[name]()
