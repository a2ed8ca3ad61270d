"""Each engine step's measured duration against the duration its work predicts.

The fitted model prices work linearly: one cost per prefill token, one per decode token, and so
on. A GPU is not linear: a big prefill chunk costs less per token than a small one (the GEMMs
use the GPU better), a batch of decodes less per token than one alone, a power cap stretches
the steps that draw most. The scheduler hook measures every step's start and end, and a step's
duration follows what it really cost more closely than its token counts do. So the model's
regressors are each step's work scaled by ``measured / predicted`` duration, the prediction a
linear fit (non-negative least squares) of step durations on step work over the last
``window`` whole steps; the tick's energy is fitted on, and split by, that time-weighted work.
A step that took 20 % longer than its tokens predict is priced as 20 % more work, shared among
its members by their own work as before. Where the durations are linear in the work (the
simulator's control scenario) every ratio is 1 and nothing changes.

A step's duration also carries noise that is not cost (the host, the clocks, the hook's own
timestamps). Two steps in a row with the same work show it: the ratio's logarithm is shrunk
toward 0 by the share of its variance that such pairs show to be noise, for decode-only steps
and for steps with a prefill apart (``_signal_share``). Where identical steps take identical
times the ratio is kept whole; where a kind of step departs from its prediction no more than
identical steps differ from each other, it is not weighed at all.

Only groups that are engine steps as the engine ran them count: ``timed`` rows (the scheduler
hook's; never the plugin's iterations, whose starts it infers, nor a span's decode piece) over
one identical interval, with a step share, that are the only work in that interval. Every other
row keeps a ratio of 1. The ratio is clipped to ``[1/clip, clip]`` so one
step stalled by the host (a garbage collection inside ``schedule()``) cannot price its members
at many times their work. Units: seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sidecar.attribution.events import DENOISE_I, PREFILL_I
from sidecar.attribution.nnls import nnls
from sidecar.attribution.tick import TickWork

__all__ = ["STEP_WORK", "StepGroups", "StepTimeFit", "step_groups"]

# a step's duration regressors: steps (1 for a whole step), prefill tokens, decode tokens,
# prefill query-key pairs, decode context tokens
STEP_WORK = ("steps", "prefill", "decode", "prefill_pairs", "decode_context")
_TOL = 1e-6


@dataclass(frozen=True, slots=True)
class StepGroups:
    """The engine steps among a tick's rows."""

    group: np.ndarray  # per row: its step's index, -1 for a row in none
    tau_s: np.ndarray  # per step: its duration inside the tick
    work: np.ndarray  # per step: its work inside the tick (steps x STEP_WORK)

    @property
    def whole(self) -> np.ndarray:
        """Per step: whether all of it lies inside the tick."""
        out: np.ndarray = np.abs(self.work[:, 0] - 1.0) < _TOL
        return out


def step_groups(tick: TickWork) -> StepGroups:
    """Group the rows of ``tick`` into engine steps (see the module's docstring)."""
    n = tick.rows.size
    group = np.full(n, -1, dtype=np.intp)
    worked = (tick.step_share > 0) & (tick.b > tick.a) & (tick.phase != DENOISE_I)
    idx = np.flatnonzero((tick.timed > 0) & worked)
    if idx.size == 0:
        return StepGroups(group, np.zeros(0), np.zeros((0, len(STEP_WORK))))
    a, b = tick.a[idx], tick.b[idx]
    if not bool(((a[1:] > a[:-1]) | ((a[1:] == a[:-1]) & (b[1:] >= b[:-1]))).all()):  # rows come by start
        order = np.lexsort((b, a))
        a, b, idx = a[order], b[order], idx[order]
    new = np.ones(idx.size, dtype=bool)
    new[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    inv = np.cumsum(new) - 1
    k = int(inv[-1]) + 1
    pre = tick.phase[idx] == PREFILL_I
    dec = ~pre
    cols = (
        tick.step_share[idx],
        np.where(pre, tick.units[idx], 0.0),
        np.where(dec, tick.units[idx], 0.0),
        np.where(pre, tick.ctx[idx], 0.0),
        np.where(dec, tick.ctx[idx], 0.0),
    )
    work = np.column_stack([np.bincount(inv, weights=c, minlength=k) for c in cols])
    tau_s = (b - a)[new]
    alone = np.abs(np.bincount(inv, weights=tick.time_share[idx], minlength=k) - tau_s) <= _TOL * tau_s
    keep = alone[inv]
    group[idx[keep]] = inv[keep]
    return StepGroups(group, np.where(alone, tau_s, 0.0), np.where(alone[:, None], work, 0.0))


class StepTimeFit:
    """Step duration as a linear function of step work, fitted over the last ``window`` whole steps."""

    def __init__(self, window: int = 4000, refit_steps: int = 500, clip: float = 2.0) -> None:
        self._x = np.zeros((window, len(STEP_WORK)))  # a ring of whole steps' work ...
        self._y = np.zeros(window)  # ... and durations (s)
        self._n = 0  # steps ever added
        self._since = 0
        self.refit_steps = refit_steps
        self.clip = clip
        self.coef: np.ndarray | None = None  # s per unit of STEP_WORK
        self.spread = 0.0  # RMS of ln(ratio) over the window's steps at the last fit (0: none departs)
        self.weight = np.ones(2)  # the share of ln(ratio) kept, decode-only steps / steps with a prefill

    def ratios(self, steps: StepGroups) -> np.ndarray:
        """Per row: its step's measured duration over the predicted one, clipped (1 for a row in no
        step, and for all rows before the first fit)."""
        out = np.ones(steps.group.size)
        if self.coef is None or steps.tau_s.size == 0:
            return out
        pred = steps.work @ self.coef
        ok = (pred > 0) & (steps.tau_s > 0)
        r = np.clip(np.where(ok, steps.tau_s / np.where(ok, pred, 1.0), 1.0), 1.0 / self.clip, self.clip)
        r = r ** self.weight[(steps.work[:, 1] > 0).astype(np.intp)]
        has = steps.group >= 0
        out[has] = r[steps.group[has]]
        return out

    def add(self, steps: StepGroups) -> None:
        """Add a tick's whole steps; refit every ``refit_steps`` of them."""
        whole = steps.whole & (steps.tau_s > 0)
        k = int(whole.sum())
        if not k:
            return
        window = self._y.size
        work, tau_s = steps.work[whole][-window:], steps.tau_s[whole][-window:]
        at = (self._n + k - tau_s.size + np.arange(tau_s.size)) % window
        self._x[at], self._y[at] = work, tau_s
        self._n += k
        self._since += k
        if self._since >= self.refit_steps and self._n >= self.refit_steps:
            self._since = 0
            self._refit()

    def _refit(self) -> None:
        n = min(self._n, self._y.size)
        x, y = self._x[:n], self._y[:n]
        scale = np.sqrt(np.mean(x * x, axis=0))
        used = scale > 0
        sol, _ = nnls(x[:, used] / scale[used], y)
        coef = np.zeros(x.shape[1])
        coef[used] = sol / scale[used]
        self.coef = coef
        pred = x @ coef
        ok = (pred > 0) & (y > 0)
        if ok.any():
            log_r = np.log(np.clip(y[ok] / pred[ok], 1.0 / self.clip, self.clip))
            self.spread = float(np.sqrt(np.mean(log_r * log_r)))
        ratio = np.where(ok, y / np.where(ok, pred, 1.0), np.nan)
        self.weight = _signal_share(self._chronological(x), self._chronological(ratio), self.clip)

    def _chronological(self, rows: np.ndarray) -> np.ndarray:
        """The window's rows, oldest first (the ring wraps once it is full)."""
        n = min(self._n, self._y.size)
        if n < self._y.size:
            return rows
        return np.roll(rows, -(self._n % n), axis=0)


def _signal_share(work: np.ndarray, ratio: np.ndarray, clip: float = 2.0) -> np.ndarray:
    """Of decode-only steps and of steps with a prefill: the share of ln(ratio) to keep.

    Two steps in a row with the same work (prefill and decode tokens and pairs equal, decode
    context within 2 %) would take the same time but for noise (the host, the clocks, the hook's
    own timestamps); half the mean square of their ln-ratio differences is that noise. A kind of
    step keeps ``1 - noise / (its mean square ln-ratio)`` of its ln-ratio, in [0, 1]: what its
    steps depart from the prediction by more than identical steps differ from each other (an
    empirical-Bayes shrinkage toward the prediction). With fewer than 50 such pairs, or 20
    steps of a kind, all of it (1).
    """
    out = np.ones(2)
    ok = (ratio > 0) & np.isfinite(ratio)
    lr = np.log(np.clip(np.where(ok, ratio, 1.0), 1.0 / clip, clip))
    a, b = work[:-1], work[1:]
    same = ok[1:] & ok[:-1] & (a[:, 1] == b[:, 1]) & (a[:, 2] == b[:, 2]) & (a[:, 3] == b[:, 3])
    same &= np.abs(b[:, 4] - a[:, 4]) <= 0.02 * np.maximum(a[:, 4], 1.0)
    if int(same.sum()) < 50:
        return out
    noise = float(np.mean((lr[1:][same] - lr[:-1][same]) ** 2)) / 2.0
    has_prefill = work[:, 1] > 0
    for kind, steps in enumerate((ok & ~has_prefill, ok & has_prefill)):
        total = float(np.mean(lr[steps] ** 2)) if int(steps.sum()) >= 20 else 0.0
        if total > 0:
            out[kind] = min(max(1.0 - noise / total, 0.0), 1.0)
    return out
