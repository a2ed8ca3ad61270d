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
(:meth:`~sidecar.attribution.rules.FittedRule.interval_j`, computed here the same
way from the sheet's covariance, a test holds the two equal): 1.96 standard
deviations of the request's work priced by the fit's coefficient covariance
(``cov``), ``1.96 sqrt(w' C w)``, widened by the energy the model leaves
unexplained. The record knows that part once its ticks are sealed; the response
cannot wait for it, so it passes an estimate, ``E * sqrt(1 - R^2)`` of the fit
window (labelled an estimate in docs/proxy.md). The work vector is the fit's own
(:data:`~sidecar.contracts.proxy_wire.PRICE_WORK`: ``shared_steps``, ``p``, ``o``,
``p (p + 1) / 2``, the decode context, no denoise). ``uncertainty_j`` is the
interval's upper half width / 1.96. A sheet without a covariance (a rule without
intervals) gives ``E +- 1.96 E sqrt(1 - R^2)``, labelled ``uncertainty_basis: "r2"``.
Before the first fit the figure is the devices' current power times ``shared_s``
(``basis: "power-share"``) with an uncertainty of 100 % and no interval. ``source``
is the meter's (``measured``, ``estimate``, ...). Without a sheet (the proxy process
could not reach the sidecar) the object says so: :func:`unavailable`.

Plain Python on a :class:`~sidecar.contracts.proxy_wire.PriceSheet` (a 6 x 6
quadratic form): the proxy's own process imports neither numpy nor attribution.
The sheet is replaced whole when a new one arrives, never changed in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sidecar.contracts.proxy_wire import PriceSheet
from sidecar.proxy.learn import RequestTrace

__all__ = [
    "Prices",
    "ProvisionalEnergy",
    "RequestWork",
    "provisional_energy",
    "trace_energy",
    "unavailable",
    "work_vector",
]

Z_95 = 1.96  # the rule's intervals are about 95 %: this many standard deviations each side
Prices = PriceSheet  # the name the proxy uses for the sheet it prices with


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


def work_vector(work: RequestWork) -> tuple[float, ...]:
    """The request's work in the fit's terms (:data:`~sidecar.contracts.proxy_wire.PRICE_WORK` order)."""
    p, o = work.prompt_tokens, work.output_tokens
    decode_context = o * p + o * (o - 1) / 2.0  # token i of the output attends over p + i
    return (work.shared_steps, float(p), float(o), p * (p + 1) / 2.0, decode_context, 0.0)


def _sd_j(cov: tuple[tuple[float, ...], ...], w: tuple[float, ...]) -> float:
    """sqrt(w' C w), the standard deviation of the work's price under the coefficients' covariance."""
    quad = sum(wi * sum(c * wj for c, wj in zip(row, w, strict=True)) for wi, row in zip(w, cov, strict=True))
    return math.sqrt(max(quad, 0.0))


def unavailable(reason: str) -> dict[str, Any]:
    """The ``energy`` object when there is no price sheet: no figure, and why."""
    return {"joules": None, "final": False, "basis": "unavailable", "reason": reason}


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
    energy_j = prices.floor_w * work.shared_s + sum(c * x for c, x in zip(coef, w, strict=True))
    energy_j = energy_j if math.isfinite(energy_j) and energy_j > 0 else 0.0
    coarse_sd_j = energy_j * math.sqrt(min(max(1.0 - prices.r2, 0.0), 1.0))
    if prices.cov is not None:  # FittedRule.interval_j: 1.96 sd of the coefficients + the unexplained
        half_j = Z_95 * _sd_j(prices.cov, w) + coarse_sd_j
        if math.isfinite(half_j):
            low, high = max(energy_j - half_j, 0.0), energy_j + half_j
            return ProvisionalEnergy(
                energy_j, half_j / Z_95, "fitted", prices.source, low, high, "covariance"
            )
    sd_j = coarse_sd_j
    low, high = max(energy_j - Z_95 * sd_j, 0.0), energy_j + Z_95 * sd_j
    return ProvisionalEnergy(energy_j, sd_j, "fitted", prices.source, low, high, "r2")


def trace_energy(
    trace: RequestTrace, prices: PriceSheet | None, why: str = "no price sheet"
) -> dict[str, Any]:
    """The ``energy`` object for ``trace`` (its usage, else its chunks as output), or why there is none."""
    if prices is None:
        return unavailable(why)
    prompt, output = trace.usage if trace.usage is not None else (0, len(trace.chunk_s))
    work = RequestWork(prompt, output, trace.shared_s, trace.shared_steps)
    return provisional_energy(prices, work).to_json()
