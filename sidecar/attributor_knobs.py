"""A sidecar's attribution domain from its knobs: the rule (fitted or not, on the idle floor) and
the attributor's bounds, each named as :mod:`sidecar.config` names it."""

from __future__ import annotations

from sidecar.attribution.engine import Attributor
from sidecar.attribution.floor import FloorEstimate
from sidecar.attribution.rules import make_rule
from sidecar.config import SidecarConfig
from sidecar.timeline import Timeline

__all__ = ["build_attributor"]


def build_attributor(
    config: SidecarConfig, timeline: Timeline, floor: FloorEstimate, source: str
) -> Attributor:
    """The attribution domain of a sidecar: its rule (fitted or not, on the idle ``floor``) and bounds,
    from the knobs; ``source``: what the meter's energy is (``measured``, ``replay``, ...)."""
    rule = make_rule(
        config.split,
        fit_window_ticks=config.fit_window_ticks,
        fit_warmup_ticks=config.fit_warmup_ticks,
        floor=floor,
        max_condition=config.fit_max_condition,
        step_weight=config.fit_step_weight,
    )
    return Attributor(
        timeline,
        rule,
        model=config.model,
        energy_source=source,
        request_timeout_s=config.request_timeout_s,
        max_held_ticks=config.fit_warmup_ticks + 100,
        warmup_max_s=config.fit_warmup_max_s,
        max_requests=config.max_requests,
        max_pending_rows=config.max_pending_rows,
        max_future_s=config.max_future_s,
        max_model_labels=config.max_model_labels,
    )
