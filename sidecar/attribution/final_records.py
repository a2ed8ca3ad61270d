"""Records of many requests at once: their sums read from the table as columns, one pass.

The records come out as a :class:`~sidecar.attribution.record_batch.RecordBatch`: each
record's values in one tuple, an object built only where one record is asked for.

What is the same for every record of a pass (the rule, the energy source, the
counter's update period, the wall-clock offset, the fit's quality) is looked up
once in a :class:`RecordContext`; each request's sums come out of the table's
arrays with one fancy index per column instead of a few numpy scalar reads per
field. Energies in joules, times in sidecar monotonic seconds (``end_unix_s``:
seconds since the epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sidecar.attribution.events import Phase
from sidecar.attribution.record_batch import RecordBatch, Values
from sidecar.attribution.records import RECORD_FIELDS
from sidecar.attribution.requests import Columns, RequestTable
from sidecar.attribution.rules import COMPONENTS

__all__ = ["RecordContext", "build_records"]

_PREFILL, _DECODE, _DENOISE = Phase.PREFILL.label, Phase.DECODE.label, Phase.DENOISE.label
# unpacking names every component: one added to COMPONENTS fails here, at import
_FLOOR, _STEP, _PREFILL_C, _DECODE_C, _CONTEXT, _DENOISE_C = COMPONENTS
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
    slots: Sequence[int],
    ctx: RecordContext,
    *,
    final: bool,
    extra_attributes: Sequence[dict[str, str] | None] | None = None,
) -> RecordBatch:
    """The immutable records of the live requests in rows ``slots`` (:attr:`Accumulator.slot`),
    final or provisional, in their order."""
    if not slots:
        return RecordBatch()
    cols = table.columns(list(slots))
    energy_j = cols.phase_j.sum(axis=1)  # each row summed in order, as float(row.sum())
    low, high = _bounds(ctx, energy_j, cols)
    extras = extra_attributes if extra_attributes is not None else [None] * len(slots)
    default_model, period, offset = ctx.default_model, ctx.update_period_s, ctx.unix_offset_s
    rule, source, quality = ctx.rule, ctx.energy_source, ctx.fit_quality
    out: list[Values] = []
    for row in zip(
        cols.request_id,
        zip(*cols.info, strict=True),
        energy_j.tolist(),
        cols.phase_j.tolist(),
        _components(cols),
        cols.busy_s.tolist(),
        cols.first_t.tolist(),
        cols.last_t.tolist(),
        cols.warmup_split.tolist(),
        low,
        high,
        extras,
        strict=True,
    ):
        rid, info, energy, phase, component_j, busy, first, last, warmup, lo, hi, extra = row
        model, operation, task, start, end, prompt, output, units, unit, attributes, _ = info
        prefill, decode, denoise = phase
        out.append(
            (  # in RECORD_FIELDS order (checked below)
                rid,  # request_id
                default_model if model is None else model,  # model ("unknown": None)
                operation,  # operation
                task,  # task
                unit,  # unit
                energy,  # energy_j
                {_PREFILL: prefill, _DECODE: decode, _DENOISE: denoise},  # phase_j
                component_j,  # component_j
                prompt,  # prompt_tokens
                output,  # output_tokens
                units or (float(output) if unit == "token" else 0.0),  # output_units
                start if start is not None else _finite(first),  # start_s
                end if end is not None else _finite(last),  # end_s
                None if end is None else end + offset,  # end_unix_s
                busy,  # busy_s
                period is not None and (last - first if last >= first else 0.0) < period,  # approximate
                final,  # final
                rule,  # rule
                source,  # energy_source
                {**plain(attributes), **extra} if extra else plain(attributes),  # attributes
                lo,  # energy_low_j
                hi,  # energy_high_j
                "warmup" if warmup else quality,  # fit_quality
            )
        )
    return RecordBatch(out)


def _bounds(ctx: RecordContext, energy_j: np.ndarray, cols: Columns) -> tuple[list[Any], list[Any]]:
    """Each record's estimated interval (low, high J; None each where the rule gives none)."""
    bounds = ctx.intervals_j(energy_j, cols.work, cols.unexplained_j)
    if bounds is None:
        return [None] * len(energy_j), [None] * len(energy_j)
    return bounds[0].tolist(), bounds[1].tolist()


def _components(cols: Columns) -> list[dict[str, float]]:
    """Each record's energy by model component (empty where none was split by components), written
    out: a third of ``dict(zip(COMPONENTS, row))``'s cost, once a record."""
    return [
        {_FLOOR: f, _STEP: s, _PREFILL_C: p, _DECODE_C: d, _CONTEXT: c, _DENOISE_C: n} if has else {}
        for (f, s, p, d, c, n), has in zip(cols.component_j.tolist(), cols.has_components, strict=True)
    ]


_ORDER = (
    "request_id model operation task unit energy_j phase_j component_j prompt_tokens output_tokens "
    "output_units start_s end_s end_unix_s busy_s approximate final rule energy_source attributes "
    "energy_low_j energy_high_j fit_quality"
)
if tuple(_ORDER.split()) != RECORD_FIELDS:  # the tuple above is written in this order
    raise ImportError("final_records: RequestEnergy's fields changed; update build_records")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def plain(attributes: Mapping[str, str]) -> dict[str, str]:
    """A request's attributes as a dict of its own: a copy of a dict, or what a compact mapping
    gives as one (``as_dict``: :class:`sidecar.taps.span_attributes.SpanAttributes`, a span's)."""
    if type(attributes) is dict:
        return attributes.copy()
    as_dict = getattr(attributes, "as_dict", None)
    if as_dict is None:
        return dict(attributes)
    made: dict[str, str] = as_dict()
    return made
