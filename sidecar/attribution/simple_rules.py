"""The rules that learn nothing: by tokens, by output tokens, equal shares (:mod:`.rules` says when
each is used), and the fallbacks every rule shares when its weights are all zero."""

from __future__ import annotations

import numpy as np

from sidecar.attribution.events import DECODE_I
from sidecar.attribution.split import Split
from sidecar.attribution.tick import TickWork

__all__ = ["TINY", "EqualRule", "OutputTokensRule", "TokensRule", "shares"]

TINY = 1e-300  # below this a weight sum is treated as zero (denormals lose precision)


def shares(weights: np.ndarray) -> np.ndarray | None:
    """Weights normalised to sum 1 (divide first: energy x tiny / tiny underflows), or None."""
    total = float(weights.sum())
    if not total > TINY or not np.isfinite(total):
        return None
    out: np.ndarray = weights / total
    return out


def _by_weights(tick: TickWork, weights: np.ndarray) -> Split:
    for candidate in (weights, tick.time_share, _equal_per_request(tick)):
        share = shares(candidate)
        if share is not None:
            return Split(tick.energy_j * share, 0.0)
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

    def interval_j(
        self, energy_j: float, work: np.ndarray, unexplained_j: float
    ) -> tuple[float, float] | None:
        return None

    def intervals_j(
        self, energy_j: np.ndarray, work: np.ndarray, unexplained_j: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        return None

    def quality(self) -> str:
        return ""


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
        return _by_weights(tick, np.where(tick.phase == DECODE_I, tick.units, 0.0))
