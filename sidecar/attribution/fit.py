"""The fitted energy model: work coefficients fitted online, the floor measured.

For tick k (duration ``tick_s``) the model is

    dE_k = floor_w * tick_s + j_per_step * steps
           + j_per_prefill_token * prefill_tokens + j_per_decode_token * decode_tokens
           + j_per_prefill_pair * prefill_pairs + j_per_context_token * decode_context
           + j_per_denoise_unit * denoise_units

``floor_w`` is the idle power floor, *measured* from idle ticks
(:mod:`.floor`), not fitted: on a saturated server the floor, the per-step and
the per-token costs are collinear and cannot all be fitted. The work
coefficients are fitted *given* the floor, by non-negative least squares (no
intercept, a tiny ridge term, columns scaled to unit RMS) over the last
``window`` busy ticks. Busy time is deliberately not a regressor: a step's
duration is a function of its work, so "power x busy time" and "cost per
token" cannot be told apart (the work coefficients include the power x time
their work adds). Attention has two coefficients: prefill attention is
compute-bound (query-key pairs), decode attention memory-bound (KV read).

Every refit also reports how well the window pins the coefficients: the
condition number of the scaled design matrix and a heteroskedasticity-robust
(sandwich) covariance of the coefficients, from which each request gets an
interval. A window whose condition number exceeds ``max_condition`` is
ill-conditioned: the last well-conditioned coefficients are kept ("held") and
the fit says so (``ok`` false). Without any floor (never idle, no override,
nothing restored) the floor is fitted as a last resort and ``ok`` is false.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from sidecar.attribution.events import DECODE_I, DENOISE_I, PREFILL_I
from sidecar.attribution.floor import FloorEstimate
from sidecar.attribution.nnls import nnls
from sidecar.attribution.records import FitSnapshot
from sidecar.attribution.tick import TickWork

log = logging.getLogger(__name__)

__all__ = ["WORK", "Coefficients", "EnergyModelFit", "work_features"]

# the fitted regressors, in order; floor_w * tick_s is subtracted first
WORK = ("steps", "prefill", "decode", "prefill_pairs", "decode_context", "denoise")


@dataclass(frozen=True, slots=True)
class Coefficients:
    """The model's coefficients, named (units in the names)."""

    floor_w: float
    j_per_step: float
    j_per_prefill_token: float
    j_per_decode_token: float
    j_per_prefill_pair: float
    j_per_context_token: float
    j_per_denoise_unit: float

    @property
    def work(self) -> np.ndarray:
        """The work coefficients in the order of :data:`WORK`."""
        return np.array(
            [
                self.j_per_step,
                self.j_per_prefill_token,
                self.j_per_decode_token,
                self.j_per_prefill_pair,
                self.j_per_context_token,
                self.j_per_denoise_unit,
            ]
        )

    @classmethod
    def from_work(cls, floor_w: float, work: np.ndarray) -> Coefficients:
        return cls(floor_w, *(float(v) for v in work))


def work_features(tick: TickWork) -> np.ndarray:
    """Per event of a busy tick, its work regressors (rows x :data:`WORK`)."""
    phase = tick.phase
    prefill, decode = phase == PREFILL_I, phase == DECODE_I
    return np.column_stack(
        [
            tick.step_share,
            np.where(prefill, tick.units, 0.0),
            np.where(decode, tick.units, 0.0),
            np.where(prefill, tick.ctx, 0.0),
            np.where(decode, tick.ctx, 0.0),
            np.where(phase == DENOISE_I, tick.units, 0.0),
        ]
    )


class EnergyModelFit:
    """Online non-negative regression of busy-tick energy above the floor on tick work."""

    def __init__(
        self,
        window: int = 600,
        min_busy_ticks: int = 50,
        ridge: float = 1e-6,
        max_condition: float = 1000.0,
        floor: FloorEstimate | None = None,
        rows_of_ticks: int = 5,
    ) -> None:
        self.window = window
        self.rows_of_ticks = rows_of_ticks
        self._row: list[float] = []  # [tick_s, energy_j] of the busy ticks not yet in a row
        self._row_work = np.zeros(len(WORK))
        self._row_n = 0
        self.min_busy_ticks = min_busy_ticks
        self.ridge = ridge
        self.max_condition = max_condition
        self.floor = floor or FloorEstimate()
        rows = max(window // rows_of_ticks, 1)
        self._x: deque[np.ndarray] = deque(maxlen=rows)  # work per row of ticks (WORK)
        self._tick_s: deque[float] = deque(maxlen=rows)
        self._y: deque[float] = deque(maxlen=rows)
        self._busy = 0  # busy ticks seen, up to min_busy_ticks (only gates readiness)
        self.coef: Coefficients | None = None
        self.cov = np.zeros((len(WORK), len(WORK)))  # of the work coefficients (J^2 per unit^2)
        self.condition = float("inf")
        self.ok = False  # well-conditioned, with a measured (or given) floor
        self.held = False  # the window was ill-conditioned: the coefficients are the last good ones
        self.refit_failed = False  # the last refit raised (a numeric failure): the last coefficients kept
        self.r2 = 0.0
        self.busy_w = 0.0
        self.now_s = 0.0

    def observe_idle(self, t_s: float, duration_s: float, energy_j: float) -> None:
        """An idle tick: a sample of the floor."""
        self.now_s = t_s
        self.floor.observe_idle(t_s, duration_s, energy_j)

    def add(self, work: np.ndarray, tick_s: float, energy_j: float, t_s: float) -> None:
        """Add one busy tick's summed work regressors and measured energy (J), and refit."""
        self.now_s = t_s
        self._busy = min(self._busy + 1, self.min_busy_ticks)
        self._row_work = self._row_work + work
        self._row = [self._row[0] + tick_s, self._row[1] + energy_j] if self._row else [tick_s, energy_j]
        self._row_n += 1
        if self._row_n < self.rows_of_ticks:
            return
        self._x.append(self._row_work)
        self._tick_s.append(self._row[0])
        self._y.append(self._row[1])
        self._row, self._row_work, self._row_n = [], np.zeros(len(WORK)), 0
        if self._busy >= self.min_busy_ticks:
            try:
                self._refit()
                self.refit_failed = False
            except (ValueError, ArithmeticError, np.linalg.LinAlgError):  # a numeric failure: not the tick's
                self.ok = False  # shown as jouletrace_model_fit_ok 0; the last coefficients kept
                if not self.refit_failed:  # logged once a failing spell
                    log.warning("the energy fit failed to refit; its last coefficients kept", exc_info=True)
                self.refit_failed = True

    @property
    def ready(self) -> bool:
        return self.coef is not None

    def _refit(self) -> None:
        x = np.vstack(self._x)
        tick_s = np.asarray(self._tick_s)
        y = np.asarray(self._y)
        floor_w = self.floor.power_w(self.now_s)
        if floor_w is None:  # last resort: fit the floor too (not identifiable when saturated)
            x = np.column_stack([tick_s, x])
            target = y
        else:
            target = y - floor_w * tick_s
        scale = np.sqrt(np.mean(x * x, axis=0))
        used = scale > 0
        if not used.any():
            return
        xs = x[:, used] / scale[used]
        sol, cov_s, condition = _nnls_with_covariance(xs, target, self.ridge)
        coef_all = np.zeros(x.shape[1])
        coef_all[used] = sol / scale[used]
        cov_all = np.zeros((x.shape[1], x.shape[1]))
        cov_all[np.ix_(used, used)] = cov_s / np.outer(scale[used], scale[used])
        if floor_w is None:
            floor_w, coef_all, cov_all = float(coef_all[0]), coef_all[1:], cov_all[1:, 1:]
        self.condition = condition
        self.held = condition > self.max_condition and self.coef is not None and self.ok
        if self.held:
            return  # keep the last well-conditioned coefficients
        self.ok = condition <= self.max_condition and self.floor.power_w(self.now_s) is not None
        self.coef = Coefficients.from_work(floor_w, coef_all)
        self.cov = cov_all
        resid = y - floor_w * tick_s - np.vstack(self._x) @ coef_all
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        self.r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else 0.0
        self.busy_w = max(float((y - floor_w * tick_s).sum() / tick_s.sum()), 0.0)

    def interval_sd_j(self, work: np.ndarray) -> float:
        """Standard deviation (J) of ``work @ coefficients`` from the coefficients' covariance."""
        return float(np.sqrt(max(float(work @ self.cov @ work), 0.0)))

    def interval_sd_many_j(self, work: np.ndarray) -> np.ndarray:
        """:meth:`interval_sd_j` of each row of ``work``: a stacked matmul runs the same vector-matrix
        and dot products row by row (one ``work @ cov`` for all rows could sum in another order)."""
        quad = np.matmul(np.matmul(work[:, None, :], self.cov), work[:, :, None])[:, 0, 0]
        out: np.ndarray = np.sqrt(np.maximum(quad, 0.0))
        return out

    def snapshot(self) -> FitSnapshot:
        """The coefficients in named units (zeros before the first fit), with the floor's provenance."""
        floor = self.floor.reading(self.now_s)
        c = self.coef or Coefficients(floor.power_w or 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return FitSnapshot(
            static_w=c.floor_w,
            busy_w=self.busy_w,
            j_per_step=c.j_per_step,
            j_per_prefill_token=c.j_per_prefill_token,
            j_per_decode_token=c.j_per_decode_token,
            j_per_prefill_context_token=c.j_per_prefill_pair,
            j_per_context_token=c.j_per_context_token,
            j_per_denoise_unit=c.j_per_denoise_unit,
            r2=self.r2,
            ticks=len(self._y) if self.coef is not None else 0,
            condition=self.condition if np.isfinite(self.condition) else 0.0,
            ok=self.ok,
            floor_source=floor.source,
            floor_age_s=floor.age_s,
            floor_stale=floor.stale,
        )


def _nnls_with_covariance(
    xs: np.ndarray, y: np.ndarray, ridge: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """NNLS solution, its sandwich covariance (on the active set) and the design's condition number."""
    n, k = xs.shape
    lam = np.sqrt(ridge * n)
    sol, _ = nnls(np.vstack([xs, lam * np.eye(k)]), np.concatenate([y, np.zeros(k)]), max_iter=50 * k)
    condition = float(np.linalg.cond(xs)) if n >= k else float("inf")
    cov = np.zeros((k, k))
    active = sol > 0
    if active.any() and n > k:
        xa = xs[:, active]
        resid = y - xs @ sol
        bread = np.linalg.pinv(xa.T @ xa + lam**2 * np.eye(int(active.sum())))
        meat = (xa * (resid**2)[:, None]).T @ xa * (n / (n - k))
        cov[np.ix_(active, active)] = bread @ meat @ bread
    return sol, cov, condition
