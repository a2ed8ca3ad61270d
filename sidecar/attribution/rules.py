"""Split rules: how one tick's measured energy is shared by the work in it.

Every rule returns non-negative per-event energies that, with the tick's idle
part, add up to the tick's measured energy exactly (conservation by
construction: a rule only chooses *weights*).

* ``fitted`` (default): the fitted model's terms, each shared by its own key —
  the static power floor by equal time shares, the per-step cost by equal step
  shares, token and attention costs to the request that caused them — then
  scaled so the tick's measured energy is met. The model's static power times
  the idle part of a busy tick stays idle. While the model has not yet seen
  enough busy ticks the attributor holds busy ticks back and splits them
  once the first fit exists (``tokens`` is the fallback only if it never does).
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
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sidecar.attribution.events import Phase
from sidecar.attribution.fit import EnergyModelFit, tick_features
from sidecar.attribution.tick import TickWork

__all__ = ["COMPONENTS", "RULES", "Split", "SplitRule", "make_rule"]

COMPONENTS = ("busy", "step", "prefill", "decode", "context", "denoise")  # context: both phases


@dataclass(frozen=True, slots=True)
class Split:
    """Per-event energies (J) of one tick, the idle part (J), and optional model components (J)."""

    row_j: np.ndarray
    idle_j: float
    component_j: np.ndarray | None = None  # rows x len(COMPONENTS), scaled like row_j


class SplitRule(Protocol):
    name: str

    @property
    def ready(self) -> bool:
        """False while the rule is still learning; the attributor then holds busy ticks."""
        ...

    def observe(self, tick: TickWork) -> None:
        """See every sealed tick, idle ones included (for rules that learn)."""
        ...

    def split(self, tick: TickWork) -> Split:
        """Share a busy tick's energy."""
        ...


_TINY = 1e-300  # below this a weight sum is treated as zero (denormals lose precision)


def _shares(weights: np.ndarray) -> np.ndarray | None:
    """Weights normalised to sum 1 (divide first: energy x tiny / tiny underflows), or None."""
    total = float(weights.sum())
    if not total > _TINY or not np.isfinite(total):
        return None
    shares: np.ndarray = weights / total
    return shares


def _by_weights(tick: TickWork, weights: np.ndarray) -> Split:
    for candidate in (weights, tick.time_share, _equal_per_request(tick)):
        shares = _shares(candidate)
        if shares is not None:
            return Split(tick.energy_j * shares, 0.0)
    raise AssertionError("equal shares always sum to 1")


def _equal_per_request(tick: TickWork) -> np.ndarray:
    _, inverse, counts = np.unique(tick.req, return_inverse=True, return_counts=True)
    out: np.ndarray = 1.0 / counts[inverse]
    return out


class _Stateless:
    name = "stateless"
    ready = True

    def observe(self, tick: TickWork) -> None:
        return None


class EqualRule(_Stateless):
    name = "equal"

    def split(self, tick: TickWork) -> Split:
        return _by_weights(tick, _equal_per_request(tick))


class TokensRule(_Stateless):
    name = "tokens"

    def split(self, tick: TickWork) -> Split:
        return _by_weights(tick, tick.units)


class OutputTokensRule(_Stateless):
    name = "output-tokens"

    def split(self, tick: TickWork) -> Split:
        return _by_weights(tick, np.where(tick.phase == Phase.DECODE, tick.units, 0.0))


class FittedRule:
    name = "fitted"

    def __init__(self, fit: EnergyModelFit | None = None) -> None:
        self.fit = fit or EnergyModelFit()

    @property
    def ready(self) -> bool:
        return self.fit.ready

    def observe(self, tick: TickWork) -> None:
        self.fit.add(tick_features(tick), tick.energy_j)

    def split(self, tick: TickWork) -> Split:
        c = self.fit.coef
        if c is None:
            return TokensRule().split(tick)
        static_w, _, j_step, j_pre, j_dec, j_pre_ctx, j_dec_ctx, j_den = (float(v) for v in c)
        phase = tick.phase
        comp = np.column_stack(
            [
                static_w * tick.time_share,
                j_step * tick.step_share,
                np.where(phase == Phase.PREFILL, j_pre * tick.units, 0.0),
                np.where(phase == Phase.DECODE, j_dec * tick.units, 0.0),
                np.where(phase == Phase.PREFILL, j_pre_ctx, j_dec_ctx) * tick.ctx,
                np.where(phase == Phase.DENOISE, j_den * tick.units, 0.0),
            ]
        )
        idle_model = static_w * max(tick.duration_s - tick.busy_s, 0.0)
        rows_model = comp.sum(axis=1)
        total = float(rows_model.sum()) + idle_model
        if not float(rows_model.sum()) > _TINY or not np.isfinite(total):
            return TokensRule().split(tick)
        energy = tick.energy_j
        return Split(energy * (rows_model / total), energy * (idle_model / total), energy * (comp / total))


RULES = ("fitted", "tokens", "output-tokens", "equal")


def make_rule(name: str, *, fit_window_ticks: int = 600, fit_warmup_ticks: int = 200) -> SplitRule:
    """The rule called ``name`` (one of :data:`RULES`)."""
    if name == "fitted":
        return FittedRule(EnergyModelFit(window=fit_window_ticks, min_busy_ticks=fit_warmup_ticks))
    simple: dict[str, Callable[[], SplitRule]] = {
        "tokens": TokensRule,
        "output-tokens": OutputTokensRule,
        "equal": EqualRule,
    }
    if name not in simple:
        raise ValueError(f"unknown split rule {name!r}; choose one of {', '.join(RULES)}")
    return simple[name]()
