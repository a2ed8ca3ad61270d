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

Uncertainty (one standard deviation, J): the fit on this branch publishes no
coefficient covariance, so it is the coarse ``E * sqrt(1 - R^2)`` of the fit
window; before the first fit the figure is the devices' current power times
``shared_s`` (``basis: "power-share"``) with an uncertainty of 100 %. Both are
labelled by ``basis``; ``source`` is the meter's (``measured``, ``estimate``, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sidecar.attribution.records import Snapshot

__all__ = ["Prices", "ProvisionalEnergy", "RequestWork", "prices_from_snapshot", "provisional_energy"]


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
    uncertainty_j: float
    basis: str  # fitted, power-share
    source: str

    def to_json(self) -> dict[str, Any]:
        """The ``energy`` object in the response."""
        return {
            "joules": round(self.energy_j, 6),
            "uncertainty_joules": round(self.uncertainty_j, 6),
            "final": False,
            "source": self.source,
            "basis": self.basis,
        }


def prices_from_snapshot(snap: Snapshot) -> Prices:
    """The current prices: the fitted model's coefficients once it has fitted, else device power."""
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
    )


def provisional_energy(prices: Prices, work: RequestWork) -> ProvisionalEnergy:
    """The request's work priced by ``prices`` (see the module docstring)."""
    p, o = work.prompt_tokens, work.output_tokens
    if not prices.fitted:
        energy_j = max(prices.power_w * work.shared_s, 0.0)
        return ProvisionalEnergy(energy_j, energy_j, "power-share", prices.source)
    decode_context = o * p + o * (o - 1) / 2.0  # token i of the output attends over p + i
    energy_j = (
        prices.floor_w * work.shared_s
        + prices.j_per_step * work.shared_steps
        + prices.j_per_prefill_token * p
        + prices.j_per_decode_token * o
        + prices.j_per_prefill_pair * p * (p + 1) / 2.0
        + prices.j_per_context_token * decode_context
    )
    energy_j = energy_j if math.isfinite(energy_j) and energy_j > 0 else 0.0
    spread = math.sqrt(min(max(1.0 - prices.r2, 0.0), 1.0))
    return ProvisionalEnergy(energy_j, energy_j * spread, "fitted", prices.source)
