"""A request's provisional energy, priced by the live fitted model, for the response itself.

The final figure comes later from attribution (``/v1/requests/{id}``); the
response carries a provisional one the moment the stream ends, so the proxy
never waits on attribution. :func:`provisional_energy` prices the request's
work with the fitted model's current coefficients (the latest snapshot):

    E = floor_w * shared_s + j_per_step * shared_steps
        + j_per_prefill_token * p + j_per_decode_token * o
        + j_per_prefill_pair * p (p + 1) / 2 + j_per_context_token * sum(context)

``shared_s`` and ``shared_steps`` are the request's share of wall time and of
engine steps: each interval between its chunks divided by the proxied requests
in flight at that moment (the floor and a step's fixed cost are shared by the
batch, as attribution shares them).

Uncertainty: the fitted rule's own interval, the one the final record's
``energy_low_j`` / ``energy_high_j`` come from
(:meth:`~sidecar.attribution.rules.FittedRule.interval_j`): 1.96 standard
deviations of the request's work priced by the fit's coefficient covariance
(``fit.cov``), widened by the energy the model leaves unexplained. The record
knows that part once its ticks are sealed; the response cannot wait for it, so it
passes an estimate, ``E * sqrt(1 - R^2)`` of the fit window (the coarse figure this
replaced; labelled an estimate in docs/proxy.md). The work vector is the fit's own
(:data:`~sidecar.attribution.fit.WORK`: ``shared_steps``, ``p``, ``o``,
``p (p + 1) / 2``, the decode context, no denoise). ``uncertainty_j`` is the
interval's upper half width / 1.96. Without the rule's interval (a :class:`Prices`
built without one) the interval is ``E +- 1.96 E sqrt(1 - R^2)``, labelled
``uncertainty_basis: "r2"``. Before the first fit the figure is the devices'
current power times ``shared_s`` (``basis: "power-share"``) with an uncertainty of
100 % and no interval. ``source`` is the meter's (``measured``, ``estimate``, ...).

The rule is called on the proxy's thread while the tick refits on its own: a refit
replaces the fit's ``coef`` and ``cov`` whole, never in place, so a call sees one
refit's covariance or the next's, never a torn one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sidecar.attribution.fit import WORK
from sidecar.attribution.records import Snapshot
from sidecar.attribution.rules import SplitRule

__all__ = [
    "IntervalJ",
    "Prices",
    "ProvisionalEnergy",
    "RequestWork",
    "prices_from_snapshot",
    "provisional_energy",
    "work_vector",
]

Z_95 = 1.96  # the rule's intervals are about 95 %: this many standard deviations each side
# (energy_j, work in the order of WORK, unexplained_j) -> the rule's ~95 % interval (J), or None
IntervalJ = Callable[[float, np.ndarray, float], tuple[float, float] | None]


@dataclass(frozen=True, slots=True)
class Prices:
    """The coefficients a request's work is priced with (units in the names)."""

    source: str  # the meter's energy source: measured, estimate, simulated, replay
    fitted: bool  # False: no fit yet, price by power_w instead
    floor_w: float = 0.0
    j_per_step: float = 0.0
    j_per_prefill_token: float = 0.0
    j_per_decode_token: float = 0.0
    j_per_prefill_pair: float = 0.0
    j_per_context_token: float = 0.0
    r2: float = 0.0
    power_w: float = 0.0  # the devices' current power (the pre-fit price)
    interval_j: IntervalJ | None = None  # the attribution rule's, for the live fit


@dataclass(frozen=True, slots=True)
class RequestWork:
    """What one request did, as the proxy saw it."""

    prompt_tokens: int
    output_tokens: int
    shared_s: float  # wall seconds, each divided by the requests in flight
    shared_steps: float  # engine steps (one per chunk), each divided likewise


@dataclass(frozen=True, slots=True)
class ProvisionalEnergy:
    """A priced figure, never final; ``basis`` says how it was priced."""

    energy_j: float
    uncertainty_j: float  # one standard deviation
    basis: str  # fitted, power-share
    source: str
    low_j: float | None = None  # the ~95 % interval, as the final record's energy_low_j / _high_j
    high_j: float | None = None
    uncertainty_basis: str = "none"  # covariance (the fit's), r2 (coarse), power-share

    def to_json(self) -> dict[str, Any]:
        """The ``energy`` object in the response."""
        low, high = self.low_j, self.high_j
        return {
            "joules": round(self.energy_j, 6),
            "uncertainty_joules": round(self.uncertainty_j, 6),
            "low_joules": None if low is None else round(low, 6),
            "high_joules": None if high is None else round(high, 6),
            "uncertainty_basis": self.uncertainty_basis,
            "final": False,
            "source": self.source,
            "basis": self.basis,
        }


def prices_from_snapshot(snap: Snapshot, rule: SplitRule | None = None) -> Prices:
    """The current prices: the fitted model's coefficients once it has fitted, else device power;
    with ``rule``, its interval for a request's work (the one its records carry)."""
    fit = snap.fit
    power_w = sum(d.power_w for d in snap.devices if d.power_w is not None and math.isfinite(d.power_w))
    return Prices(
        source=snap.energy_source,
        fitted=fit.ticks > 0,
        floor_w=fit.static_w,
        j_per_step=fit.j_per_step,
        j_per_prefill_token=fit.j_per_prefill_token,
        j_per_decode_token=fit.j_per_decode_token,
        j_per_prefill_pair=fit.j_per_prefill_context_token,
        j_per_context_token=fit.j_per_context_token,
        r2=fit.r2,
        power_w=power_w,
        interval_j=None if rule is None else rule.interval_j,
    )


def work_vector(work: RequestWork) -> np.ndarray:
    """The request's work in the fit's regressors (:data:`~sidecar.attribution.fit.WORK` order)."""
    p, o = work.prompt_tokens, work.output_tokens
    decode_context = o * p + o * (o - 1) / 2.0  # token i of the output attends over p + i
    by_name = {
        "steps": work.shared_steps,
        "prefill": float(p),
        "decode": float(o),
        "prefill_pairs": p * (p + 1) / 2.0,
        "decode_context": decode_context,
        "denoise": 0.0,
    }
    return np.array([by_name[name] for name in WORK])


def provisional_energy(prices: Prices, work: RequestWork) -> ProvisionalEnergy:
    """The request's work priced by ``prices`` (see the module docstring)."""
    if not prices.fitted:
        energy_j = max(prices.power_w * work.shared_s, 0.0)
        return ProvisionalEnergy(energy_j, energy_j, "power-share", prices.source, None, None, "power-share")
    w = work_vector(work)
    coef = (
        prices.j_per_step,
        prices.j_per_prefill_token,
        prices.j_per_decode_token,
        prices.j_per_prefill_pair,
        prices.j_per_context_token,
        0.0,  # denoise: no LLM request has any
    )
    energy_j = prices.floor_w * work.shared_s + sum(c * float(x) for c, x in zip(coef, w, strict=True))
    energy_j = energy_j if math.isfinite(energy_j) and energy_j > 0 else 0.0
    coarse_sd_j = energy_j * math.sqrt(min(max(1.0 - prices.r2, 0.0), 1.0))
    interval = None if prices.interval_j is None else prices.interval_j(energy_j, w, coarse_sd_j)
    if interval is not None and all(math.isfinite(b) for b in interval):
        sd_j = max(interval[1] - energy_j, 0.0) / Z_95
        return ProvisionalEnergy(energy_j, sd_j, "fitted", prices.source, *interval, "covariance")
    sd_j = coarse_sd_j
    low, high = max(energy_j - Z_95 * sd_j, 0.0), energy_j + Z_95 * sd_j
    return ProvisionalEnergy(energy_j, sd_j, "fitted", prices.source, low, high, "r2")
