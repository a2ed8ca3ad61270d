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

Uncertainty (one standard deviation, J): with the work coefficients' covariance
(``Prices.work_cov``, in the order of :data:`WORK`), ``sqrt(w' C w)`` for the
request's work vector ``w``; without one (the snapshot publishes none) the
coarse ``E * sqrt(1 - R^2)`` of the fit window. Before the first fit the figure
is the devices' current power times ``shared_s`` (``basis: "power-share"``)
with an uncertainty of 100 %. ``source`` is the meter's (``measured``,
``estimate``, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sidecar.attribution.records import Snapshot

__all__ = ["WORK", "Prices", "ProvisionalEnergy", "RequestWork", "prices_from_snapshot", "provisional_energy"]

# the work terms priced, in the order of a covariance matrix of their coefficients
WORK = ("steps", "prefill", "decode", "prefill_pairs", "decode_context")


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
    work_cov: tuple[tuple[float, ...], ...] | None = None  # J^2/unit^2, rows and columns in WORK order


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
    w = (work.shared_steps, float(p), float(o), p * (p + 1) / 2.0, decode_context)  # WORK order
    coef = (
        prices.j_per_step,
        prices.j_per_prefill_token,
        prices.j_per_decode_token,
        prices.j_per_prefill_pair,
        prices.j_per_context_token,
    )
    energy_j = prices.floor_w * work.shared_s + sum(c * x for c, x in zip(coef, w, strict=True))
    energy_j = energy_j if math.isfinite(energy_j) and energy_j > 0 else 0.0
    if prices.work_cov is not None:
        var = sum(w[i] * prices.work_cov[i][j] * w[j] for i in range(len(w)) for j in range(len(w)))
        sd_j = math.sqrt(var) if math.isfinite(var) and var > 0 else 0.0
    else:
        sd_j = energy_j * math.sqrt(min(max(1.0 - prices.r2, 0.0), 1.0))
    return ProvisionalEnergy(energy_j, sd_j, "fitted", prices.source)
