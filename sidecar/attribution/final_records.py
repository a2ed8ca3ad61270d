"""Records of many requests at once: their sums read from the table as columns, one pass.

What is the same for every record of a pass (the rule, the energy source, the
counter's update period, the wall-clock offset, the fit's quality) is looked up
once in a :class:`RecordContext`; each request's sums come out of the table's
arrays with one fancy index per column instead of a few numpy scalar reads per
field. Energies in joules, times in sidecar monotonic seconds (``end_unix_s``:
seconds since the epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sidecar.attribution.events import Phase, RequestInfo
from sidecar.attribution.records import RequestEnergy
from sidecar.attribution.requests import Accumulator, RequestTable
from sidecar.attribution.rules import COMPONENTS

__all__ = ["RecordContext", "build_records"]

_PHASE_LABELS = (Phase.PREFILL.label, Phase.DECODE.label, Phase.DENOISE.label)
Intervals = Callable[[np.ndarray, np.ndarray, np.ndarray], "tuple[np.ndarray, np.ndarray] | None"]


@dataclass(frozen=True, slots=True)
class RecordContext:
    """What every record of one pass shares."""

    default_model: str  # for requests whose model is unknown
    rule: str
    energy_source: str
    update_period_s: float | None  # the counter's; a busy window shorter than this is approximate
    unix_offset_s: float  # wall clock minus sidecar clock (s)
    fit_quality: str  # of the rule now ("warmup" for a request split by the warm-up fallback)
    intervals_j: Intervals  # the rule's uncertainty intervals for (energy, work, unexplained) rows


def build_records(
    table: RequestTable,
    accs: Sequence[Accumulator],
    ctx: RecordContext,
    *,
    final: bool,
    extra_attributes: Sequence[dict[str, str] | None] | None = None,
) -> list[RequestEnergy]:
    """The immutable records of live requests ``accs``, final or provisional, in their order."""
    if not accs:
        return []
    cols = table.columns([acc.slot for acc in accs])
    energy_j = cols.phase_j.sum(axis=1)  # each row summed in order, as float(row.sum())
    bounds = ctx.intervals_j(energy_j, cols.work, cols.unexplained_j)
    low, high = (None, None) if bounds is None else (bounds[0].tolist(), bounds[1].tolist())
    energy = energy_j.tolist()
    phases, components = cols.phase_j.tolist(), cols.component_j.tolist()
    has_components, busy = cols.has_components.tolist(), cols.busy_s.tolist()
    first, last = cols.first_t.tolist(), cols.last_t.tolist()
    period, offset = ctx.update_period_s, ctx.unix_offset_s
    out = []
    for k, acc in enumerate(accs):
        info = acc.info or RequestInfo(acc.request_id, model=ctx.default_model)
        window_s = last[k] - first[k] if last[k] >= first[k] else 0.0
        extra = extra_attributes[k] if extra_attributes is not None else None
        out.append(
            RequestEnergy(
                request_id=acc.request_id,
                model=info.model if info.model != "unknown" else ctx.default_model,
                operation=info.operation,
                task=info.task,
                unit=info.unit,
                energy_j=energy[k],
                phase_j=dict(zip(_PHASE_LABELS, phases[k], strict=True)),
                component_j=dict(zip(COMPONENTS, components[k], strict=True)) if has_components[k] else {},
                prompt_tokens=info.prompt_tokens,
                output_tokens=info.output_tokens,
                output_units=info.output_units
                or (float(info.output_tokens) if info.unit == "token" else 0.0),
                start_s=info.start_s if info.start_s is not None else _finite(first[k]),
                end_s=info.end_s if info.end_s is not None else _finite(last[k]),
                end_unix_s=None if info.end_s is None else info.end_s + offset,
                busy_s=busy[k],
                approximate=period is not None and window_s < period,
                final=final,
                rule=ctx.rule,
                energy_source=ctx.energy_source,
                attributes={**info.attributes, **extra} if extra else dict(info.attributes),
                energy_low_j=None if low is None else low[k],
                energy_high_j=None if high is None else high[k],
                fit_quality="warmup" if acc.warmup_split else ctx.fit_quality,
            )
        )
    return out


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
