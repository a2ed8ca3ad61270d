"""The sidecar's side of pricing: the live fitted model as a price sheet (``GET /v1/prices``).

:func:`prices_from_snapshot` reads the sheet off the sidecar's latest snapshot and
split rule: the fitted model's coefficients once it has fitted (else the devices'
power), and, from the fitted rule, its coefficients' covariance, so the proxy
prices the same ~95 % interval the final record gets
(:meth:`~sidecar.attribution.rules.FittedRule.interval_j`). The in-process proxy
calls it directly; the proxy in its own process fetches the same sheet as JSON
(:meth:`~sidecar.contracts.proxy_wire.PriceSheet.to_json`) from the sidecar's API.
"""

from __future__ import annotations

import math
from typing import Any

from sidecar.attribution.records import Snapshot
from sidecar.attribution.rules import FittedRule, SplitRule
from sidecar.contracts.proxy_wire import PriceSheet

__all__ = ["price_json", "prices_from_snapshot"]


def prices_from_snapshot(snap: Snapshot, rule: SplitRule | None = None) -> PriceSheet:
    """The current sheet; with the fitted ``rule`` once it has coefficients, their covariance too."""
    fit = snap.fit
    power_w = sum(d.power_w for d in snap.devices if d.power_w is not None and math.isfinite(d.power_w))
    cov = None
    if isinstance(rule, FittedRule) and rule.fit.coef is not None:
        cov = tuple(tuple(float(x) for x in row) for row in rule.fit.cov)  # replaced whole at each refit
    return PriceSheet(
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
        cov=cov,
    )


def price_json(snap: Snapshot, rule: SplitRule | None) -> dict[str, Any]:
    """The ``GET /v1/prices`` body (non-finite numbers, which JSON cannot carry, as 0)."""
    sheet = prices_from_snapshot(snap, rule)
    doc = sheet.to_json()
    for key, value in doc.items():
        if isinstance(value, float) and not math.isfinite(value):
            doc[key] = 0.0
    if sheet.cov is not None and not all(math.isfinite(x) for row in sheet.cov for x in row):
        doc["cov"] = None
    return doc
