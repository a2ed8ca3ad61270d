"""The fitted energy model, estimated online over recent ticks.

For tick k (duration ``tick_s``) the model is

    dE_k = static_w * tick_s + j_per_step * steps
           + j_prefill * prefill_tokens + j_decode * decode_tokens
           + j_prefill_ctx * prefill_pairs + j_decode_ctx * decode_context
           + j_denoise * denoise_units

with every coefficient non-negative. ``static_w`` is the power floor the GPU
draws whatever it does (pinned by idle ticks); everything above the floor is
caused by work: a fixed cost per engine step (weights streamed once for the
whole batch) and costs per token and per unit of attention work, *including
the time that work adds* (the extra power x the extra time). Busy time is
deliberately not a regressor: a step's duration is itself a function of its
work, so "power x busy time" and "cost per token" cannot be told apart from
energy counters (the data fit both equally well), and only this
decomposition is identifiable. Attention work has two coefficients: prefill
attention is compute-bound (query-key pairs), decode attention is
memory-bound (reading the KV cache).

Fitted by non-negative least squares with a small ridge term over the last
``window`` ticks, columns scaled to unit RMS so seconds and token counts weigh
alike. ``busy_w`` in the snapshot is descriptive (mean power above the floor
while busy), not a coefficient. The coefficients are the study's diagnosis:
static power, energy per step, energy per token.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from scipy.optimize import nnls

from sidecar.attribution.events import Phase
from sidecar.attribution.records import FitSnapshot
from sidecar.attribution.tick import TickWork

__all__ = ["FEATURES", "REGRESSORS", "EnergyModelFit", "tick_features"]

FEATURES = ("tick_s", "busy_s", "steps", "prefill", "decode", "prefill_ctx", "decode_ctx", "denoise")
REGRESSORS = tuple(i for i, name in enumerate(FEATURES) if name != "busy_s")
_BUSY = FEATURES.index("busy_s")


def tick_features(tick: TickWork) -> np.ndarray:
    """The features of one tick, in the order of :data:`FEATURES`."""
    units_by_phase = np.bincount(tick.phase, weights=tick.units, minlength=3)
    ctx_by_phase = np.bincount(tick.phase, weights=tick.ctx, minlength=3)
    return np.array(
        [
            tick.duration_s,
            tick.busy_s,
            float(tick.step_share.sum()),
            float(units_by_phase[Phase.PREFILL]),
            float(units_by_phase[Phase.DECODE]),
            float(ctx_by_phase[Phase.PREFILL]),
            float(ctx_by_phase[Phase.DECODE]),
            float(units_by_phase[Phase.DENOISE]),
        ]
    )


class EnergyModelFit:
    """Online non-negative ridge regression of tick energy on tick work."""

    def __init__(self, window: int = 600, min_busy_ticks: int = 200, ridge: float = 1e-4) -> None:
        self.window = window
        self.min_busy_ticks = min_busy_ticks
        self.ridge = ridge
        self._x: deque[np.ndarray] = deque(maxlen=window)
        self._y: deque[float] = deque(maxlen=window)
        self._busy = 0  # busy ticks seen, up to min_busy_ticks (only gates readiness)
        self.coef: np.ndarray | None = None  # per FEATURES; busy_s's entry is always 0
        self.r2 = 0.0
        self.busy_w = 0.0

    def add(self, x: np.ndarray, energy_j: float) -> None:
        """Add one tick's features and measured energy (J), and refit."""
        self._x.append(x)
        self._y.append(energy_j)
        if x[_BUSY] > 0:
            self._busy = min(self._busy + 1, self.min_busy_ticks)
        if self._busy >= self.min_busy_ticks:
            self._refit()

    @property
    def ready(self) -> bool:
        return self.coef is not None

    def _refit(self) -> None:
        features = np.vstack(self._x)
        x = features[:, REGRESSORS]
        y = np.asarray(self._y)
        scale = np.sqrt(np.mean(x * x, axis=0))
        used = scale > 0
        xs = x[:, used] / scale[used]
        k = int(used.sum())
        lam = np.sqrt(self.ridge * len(y))
        a = np.vstack([xs, lam * np.eye(k)])
        b = np.concatenate([y, np.zeros(k)])
        sol, _ = nnls(a, b, maxiter=50 * k)
        reg = np.zeros(x.shape[1])
        reg[used] = sol / scale[used]
        coef = np.zeros(len(FEATURES))
        coef[list(REGRESSORS)] = reg
        self.coef = coef
        resid = y - x @ reg
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        self.r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else 0.0
        busy = features[:, _BUSY]
        if busy.sum() > 0:
            above = y - coef[0] * features[:, 0]
            self.busy_w = max(float(above[busy > 0].sum() / busy.sum()), 0.0)

    def snapshot(self) -> FitSnapshot:
        """The coefficients in named units (zeros before the first fit)."""
        c = self.coef if self.coef is not None else np.zeros(len(FEATURES))
        return FitSnapshot(
            static_w=float(c[0]),
            busy_w=self.busy_w,
            j_per_step=float(c[2]),
            j_per_prefill_token=float(c[3]),
            j_per_decode_token=float(c[4]),
            j_per_prefill_context_token=float(c[5]),
            j_per_context_token=float(c[6]),
            j_per_denoise_unit=float(c[7]),
            r2=self.r2,
            ticks=len(self._y) if self.coef is not None else 0,
        )
