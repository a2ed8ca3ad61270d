"""Records as rows of values (RecordBatch) are the records the per-record path built, bit for bit.

``_reference`` is ``build_records`` as it was before records became rows of values (one frozen
``RequestEnergy`` per request, built field by field): the batch's records must be the same values,
on edge inputs (no info, unknown model, no work, a stated end, extras over the info's attributes,
no components, the warm-up flag, intervals or none, zero or non-finite sums), and its ledger rows,
JSON text and histograms the same as those of the record objects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.attribution.events import RequestInfo
from sidecar.attribution.final_records import RecordContext, build_records
from sidecar.attribution.record_batch import RecordBatch, record_of, to_json, values_of
from sidecar.attribution.records import RECORD_FIELDS, RequestEnergy
from sidecar.attribution.requests import Accumulator, RequestTable
from sidecar.attribution.rules import COMPONENTS
from sidecar.export import ledger_rows
from tests.sidecar.export.test_ledger_json import records as any_records

_PREFILL, _DECODE, _DENOISE = "prefill", "decode", "denoise"


def _reference(
    table: RequestTable,
    accs: Sequence[Accumulator],
    ctx: RecordContext,
    *,
    final: bool,
    extra_attributes: Sequence[dict[str, str] | None] | None = None,
) -> list[RequestEnergy]:
    """build_records before RecordBatch (git 64d1355, sidecar/attribution/final_records.py)."""
    if not accs:
        return []
    cols = table.columns([acc.slot for acc in accs])
    energy_j = cols.phase_j.sum(axis=1)
    bounds = ctx.intervals_j(energy_j, cols.work, cols.unexplained_j)
    n = len(accs)
    low, high = ([None] * n, [None] * n) if bounds is None else (bounds[0].tolist(), bounds[1].tolist())
    extras = extra_attributes if extra_attributes is not None else [None] * n
    default_model, period, offset = ctx.default_model, ctx.update_period_s, ctx.unix_offset_s
    out = []
    for row in zip(
        cols.request_id,
        [acc.info for acc in accs],  # the infos as objects (the table keeps them as columns)
        energy_j.tolist(),
        cols.phase_j.tolist(),
        cols.component_j.tolist(),
        cols.has_components.tolist(),
        cols.busy_s.tolist(),
        cols.first_t.tolist(),
        cols.last_t.tolist(),
        cols.warmup_split.tolist(),
        low,
        high,
        extras,
        strict=True,
    ):
        rid, info, energy, phase, component, has_components, busy, first, last, warmup, lo, hi, extra = row
        if info is None:
            info = RequestInfo(rid, model=default_model)
        prefill, decode, denoise = phase
        out.append(
            RequestEnergy(
                request_id=rid,
                model=info.model if info.model != "unknown" else default_model,
                operation=info.operation,
                task=info.task,
                unit=info.unit,
                energy_j=energy,
                phase_j={_PREFILL: prefill, _DECODE: decode, _DENOISE: denoise},
                component_j=dict(zip(COMPONENTS, component, strict=True)) if has_components else {},
                prompt_tokens=info.prompt_tokens,
                output_tokens=info.output_tokens,
                output_units=info.output_units
                or (float(info.output_tokens) if info.unit == "token" else 0.0),
                start_s=info.start_s if info.start_s is not None else _finite(first),
                end_s=info.end_s if info.end_s is not None else _finite(last),
                end_unix_s=None if info.end_s is None else info.end_s + offset,
                busy_s=busy,
                approximate=period is not None and (last - first if last >= first else 0.0) < period,
                final=final,
                rule=ctx.rule,
                energy_source=ctx.energy_source,
                attributes={**info.attributes, **extra} if extra else dict(info.attributes),
                energy_low_j=lo,
                energy_high_j=hi,
                fit_quality="warmup" if warmup else ctx.fit_quality,
            )
        )
    return out


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


joules = st.floats(0.0, 1e6) | st.sampled_from([0.0, 5e-324, 1e300, math.inf, math.nan])
times = st.floats(-1e6, 1e9) | st.sampled_from([0.0, -0.0, math.inf, -math.inf])
infos = st.none() | st.builds(
    RequestInfo,
    st.just(""),  # replaced by the request's id
    model=st.sampled_from(["unknown", "llama", ""]),
    operation=st.sampled_from(["chat", "text_completion", "image_generation"]),
    task=st.sampled_from(["unknown", "chat", "ünï"]),
    start_s=st.none() | times,
    end_s=st.none() | times,
    prompt_tokens=st.integers(0, 10**6),
    output_tokens=st.integers(0, 10**6),
    output_units=st.sampled_from([0.0, 1.0, 2.5]),
    unit=st.sampled_from(["token", "image", "video"]),
    attributes=st.dictionaries(st.sampled_from(["trace_id", "energy_unknown", "a"]), st.text(max_size=4)),
)
extras = st.none() | st.dictionaries(
    st.sampled_from(["end_inferred", "energy_unknown", "energy_unknown_reason", "a"]), st.text(max_size=4)
)
requests = st.tuples(
    infos,
    st.lists(joules, min_size=3, max_size=3),  # J per phase
    st.lists(joules, min_size=len(COMPONENTS), max_size=len(COMPONENTS)),
    st.booleans(),  # has components
    st.tuples(times, times),  # first and last work (inf, -inf: none)
    joules,  # busy_s
    st.booleans(),  # warm-up split
    extras,
)


Spec = tuple[Any, ...]  # one drawn request (see `requests`)


def _table(specs: list[Spec]) -> tuple[RequestTable, list[Accumulator], list[dict[str, str] | None]]:
    table = RequestTable()
    accs, extra = [], []
    for k, (info, phase, comp, has_comp, (first, last), busy, warmup, ext) in enumerate(specs):
        rid = f"r{k}"
        if info is not None:
            table.set_info(
                rid, RequestInfo(**{**{f: getattr(info, f) for f in info.__slots__}, "request_id": rid})
            )
        acc = table.get(rid) or table.by_code(table.code(rid))
        assert acc is not None
        sums = table._sums
        sums.phase_j[acc.slot] = phase
        sums.component_j[acc.slot] = comp
        sums.has_components[acc.slot] = has_comp
        sums.first_t[acc.slot], sums.last_t[acc.slot] = first, last
        sums.busy_s[acc.slot] = busy
        acc.warmup_split = warmup
        accs.append(acc)
        extra.append(ext)
    return table, accs, extra


def _intervals(
    energy: np.ndarray, work: np.ndarray, unexplained: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, as a rule's could be
        half = 0.1 * energy + unexplained
        return np.maximum(energy - half, 0.0), energy + half


def _same(a: RequestEnergy, b: RequestEnergy) -> None:
    """Every field the same value and type (repr: NaN-safe, tells 1 from 1.0 and 0.0 from -0.0)."""
    for name in RECORD_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert type(x) is type(y) and repr(x) == repr(y), name


@settings(max_examples=300, deadline=None)
@given(
    st.lists(requests, max_size=8),
    st.booleans(),
    st.none() | st.floats(0.0, 1.0),
    st.booleans(),
    st.sampled_from(["ok", "held", ""]),
)
def test_a_batch_holds_the_records_the_per_record_path_built(
    specs: list[Spec], final: bool, period: float | None, bounds: bool, quality: str
) -> None:
    table, accs, extra = _table(specs)
    ctx = RecordContext(
        "default-model",
        "fitted",
        "measured",
        period,
        1.7e9,
        quality,
        _intervals if bounds else (lambda *a: None),
    )
    want = _reference(table, accs, ctx, final=final, extra_attributes=extra)
    got = build_records(table, [a.slot for a in accs], ctx, final=final, extra_attributes=extra)
    assert isinstance(got, RecordBatch) and len(got) == len(want)
    for values, rec in zip(got.values, want, strict=True):
        _same(record_of(values), rec)
        assert repr(ledger_rows.values_row(values, 7, 1.5)) == repr(
            ledger_rows.values_row(values_of(rec), 7, 1.5)
        )
    for rec_a, rec_b in zip(got, want, strict=True):  # iterating builds the objects: the same
        _same(rec_a, rec_b)


@settings(max_examples=300, deadline=None)
@given(any_records())
def test_a_records_values_give_back_the_record_and_its_json_form(rec: RequestEnergy) -> None:
    values = values_of(rec)
    _same(record_of(values), rec)
    assert repr(to_json(values)) == repr(rec.to_json())


def test_a_batch_is_a_sequence_of_records_equal_to_a_list_of_them() -> None:
    table, accs, extra = _table(
        [(None, [1.0, 2.0, 0.0], [0.0] * len(COMPONENTS), False, (0.0, 1.0), 1.0, False, None)] * 3
    )
    ctx = RecordContext("m", "fitted", "measured", 0.1, 0.0, "ok", lambda *a: None)
    batch = build_records(table, [a.slot for a in accs], ctx, final=True, extra_attributes=extra)
    records = _reference(table, accs, ctx, final=True, extra_attributes=extra)
    assert batch == records and records == batch and batch != records[:2] and RecordBatch() == []
    assert batch[1] == records[1] and batch[-1] == records[-1] and batch[1:] == records[1:]
    assert [r.request_id for r in batch] == ["r0", "r1", "r2"]
    assert list(batch) is not list(batch) and batch.records() is batch.records()  # built once
    both = batch + records[:1]
    assert isinstance(both, RecordBatch) and both == [*records, records[0]]
    assert RecordBatch.of(records) == records and RecordBatch.of(batch) is batch
    grown = list(records[:1])
    grown += batch  # a list grown by a batch stays a list
    assert grown == [records[0], *records] and isinstance(grown, list)
