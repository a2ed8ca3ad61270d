"""Batched per-request histograms read exactly as the OTel SDK recording every value would.

The reference is the SDK itself: the same instruments, views and attributes, one
``Histogram.record``/``Counter.add`` per value (what the exporter did before batching).
Both see the same records in the same batches with scrapes in between, and their whole
``/metrics`` text must be equal: names, label order, series order, buckets, counts, sums.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.attribution.record_batch import RecordBatch, per_unit_j
from sidecar.attribution.records import RequestEnergy, Snapshot
from sidecar.contracts.span_attributes import TENANT
from sidecar.export import instruments, tenants
from sidecar.export import metrics as m
from sidecar.export import record_histograms as h
from sidecar.export.aggregates import CARDINALITY_LIMIT, Stream
from sidecar.export.metrics import MetricsExporter
from sidecar.export.record_histograms import MAX_TASKS
from sidecar.export.tenants import TenantLabels
from tests.sidecar.export.factories import IMAGE, LLM, VIDEO, golden_snapshot, make_record


class SdkReference:
    """The exporter as it was: every value through the SDK's synchronous instruments."""

    def __init__(self, snapshot: Snapshot, resource: Resource) -> None:
        self.registry = CollectorRegistry()
        views = [
            View(
                instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(b), attribute_keys=set(k)
            )
            for name, b, k in (
                (instruments.REQUEST_ENERGY, m.REQUEST_ENERGY_BUCKETS_J, h._REQUEST_KEYS),
                (instruments.ENERGY_PER_OUTPUT_TOKEN, m.ENERGY_PER_TOKEN_BUCKETS_J, h._PER_TOKEN_KEYS),
                (instruments.ENERGY_PER_OUTPUT_UNIT, m.REQUEST_ENERGY_BUCKETS_J, h._PER_UNIT_KEYS),
            )
        ]
        reader = PrometheusMetricReader(registry=self.registry)
        self.provider = MeterProvider(metric_readers=[reader], resource=resource, views=views)
        meter = self.provider.get_meter("jouletrace", m._scope_version())
        desc = {s.name: (s.unit, s.description) for s in _streams()}
        make = meter.create_histogram
        self.request = make(instruments.REQUEST_ENERGY, *desc[instruments.REQUEST_ENERGY])
        self.per_token = make(instruments.ENERGY_PER_OUTPUT_TOKEN, *desc[instruments.ENERGY_PER_OUTPUT_TOKEN])
        self.per_unit = make(instruments.ENERGY_PER_OUTPUT_UNIT, *desc[instruments.ENERGY_PER_OUTPUT_UNIT])
        self.tenant_j = meter.create_counter(instruments.TENANT_ENERGY, *desc[instruments.TENANT_ENERGY])
        self.tenant_n = meter.create_counter(
            instruments.TENANT_OUTPUT_TOKENS, *desc[instruments.TENANT_OUTPUT_TOKENS]
        )
        self.tenants = TenantLabels(10)
        for spec in instruments.OBSERVABLES:
            create = meter.create_observable_counter if spec.counter else meter.create_observable_gauge

            def callback(options: CallbackOptions, observe=spec.observe) -> Iterable[Observation]:  # type: ignore[no-untyped-def]
                return [Observation(v, a) for v, a in observe(snapshot)]

            create(spec.name, callbacks=[callback], unit=spec.unit, description=spec.description)

    def record(self, records: list[RequestEnergy]) -> None:
        for rec in records:
            if not rec.final or not math.isfinite(rec.energy_j) or rec.energy_j < 0:
                continue
            if rec.attributes.get("energy_unknown") == "true":
                continue
            attrs = {
                "gen_ai.request.model": rec.model,
                "gen_ai.operation.name": rec.operation,
                "jouletrace.task": rec.task,
                "energy.source": rec.energy_source,
            }
            short = {k: v for k, v in attrs.items() if k != "gen_ai.operation.name"}
            self.request.record(rec.energy_j, attrs)
            if rec.unit == "token":
                if rec.output_tokens > 0:
                    self.per_token.record(rec.energy_j / rec.output_tokens, short)
                tenant = self.tenants.label(rec.attributes.get(TENANT), rec.energy_j)
                who = {"gen_ai.request.model": rec.model, "jouletrace.tenant": tenant}
                self.tenant_j.add(rec.energy_j, {**who, "energy.source": rec.energy_source})
                self.tenant_n.add(rec.output_tokens, who)
            elif rec.unit in ("image", "video") and rec.output_units > 0:
                self.per_unit.record(rec.energy_j / rec.output_units, {**short, "jouletrace.unit": rec.unit})
                frames = h._float(rec.attributes.get("video_frames"))
                if rec.unit == "video" and frames > 0:
                    all_frames = frames * rec.output_units
                    self.per_unit.record(rec.energy_j / all_frames, {**short, "jouletrace.unit": "frame"})
                    fps = h._float(rec.attributes.get("video_fps"))
                    if fps > 0:
                        unit = {**short, "jouletrace.unit": "video_second"}
                        self.per_unit.record(rec.energy_j / (all_frames / fps), unit)

    def render(self) -> str:
        return generate_latest(self.registry).decode()


def _streams() -> list[Stream]:
    exp = MetricsExporter(golden_snapshot, resource=Resource({}))
    out = [exp._request_energy, exp._per_token, exp._per_unit, exp._tenant_energy, exp._tenant_tokens]
    exp.shutdown()
    return out


def _records(rng: random.Random, n: int) -> list[RequestEnergy]:
    """Chat, image and video requests across the buckets (boundaries exactly too), tenants, odd ones."""
    out = []
    for k in range(n):
        kind = rng.random()
        energy = rng.choice([0.01, 2e6, 1e-4, 0.0, rng.lognormvariate(2, 3), rng.uniform(0, 50)])
        tokens = rng.choice([0, 1, rng.randint(1, 2000)])
        attributes = {TENANT: rng.choice(["", "a", "b", f"t{rng.randint(0, 40)}"])}
        rec = make_record(
            request_id=f"r{k}",
            energy_j=energy,
            output_tokens=tokens,
            task=rng.choice(["chat", "code", "unknown"]),
            attributes=attributes,
            final=rng.random() > 0.05,
        )
        if kind < 0.1:
            rec = make_record(
                request_id=f"r{k}", model=IMAGE, unit="image", energy_j=energy, output_units=1.0
            )
        elif kind < 0.2:
            video = {"video_frames": rng.choice(["81", "0", "x"]), "video_fps": rng.choice(["16", "0"])}
            rec = make_record(model=VIDEO, unit="video", energy_j=energy, output_units=2.0, attributes=video)
        elif kind < 0.25:
            rec = make_record(energy_j=energy, attributes={"energy_unknown": "true"})
        out.append(rec)
    return out


def test_batched_histograms_render_as_the_sdk_recording_each_value(monkeypatch: pytest.MonkeyPatch) -> None:
    # the SDK cannot end a series: no tenant is put out of its slot here (test_tenants.py has that)
    monkeypatch.setattr(tenants, "SWAP_MARGIN", math.inf)
    rng = random.Random(7)
    snap = golden_snapshot()
    resource = Resource({"service.name": "jouletrace-sidecar"})
    batched = MetricsExporter(lambda: snap, resource=resource)
    reference = SdkReference(snap, resource)
    try:
        assert batched.render().decode() == reference.render()  # a scrape before any record
        for size in (1, 3, 200, 0, 57, 1000):
            records = _records(rng, size)
            batched.record(records)
            reference.record(records)
            assert batched.render().decode() == reference.render()
    finally:
        batched.shutdown()
        reference.provider.shutdown()


def test_histograms_first_recorded_before_a_scrape_come_first_as_in_the_sdk() -> None:
    snap = golden_snapshot()
    resource = Resource({})
    batched = MetricsExporter(lambda: snap, resource=resource)
    reference = SdkReference(snap, resource)
    try:
        video = make_record(model=VIDEO, unit="video", energy_j=5.0, output_units=1.0)
        for exporter in (batched, reference):
            exporter.record([video, make_record()])  # per unit first, then per token and tenants
        assert batched.render().decode() == reference.render()
    finally:
        batched.shutdown()
        reference.provider.shutdown()


def test_attribute_sets_beyond_the_limit_share_one_overflow_series_as_in_the_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The streams' own limit, as the SDK's; the exporter's label sets bound (``test_label_sets.py``)
    keeps it far below, so it is lifted here."""
    monkeypatch.setattr(h, "MAX_LABEL_SETS", CARDINALITY_LIMIT + 10)
    snap = golden_snapshot()
    batched = MetricsExporter(lambda: snap, resource=Resource({}))
    reference = SdkReference(snap, Resource({}))
    try:
        records = [  # distinct (model, task) pairs, each name within the exporter's name caps
            make_record(request_id=f"r{k}", model=f"m-{k % 50}", task=f"task-{k // 50}")
            for k in range(CARDINALITY_LIMIT + 5)
        ]
        for exporter in (batched, reference):
            exporter.record(records)
        text = batched.render().decode()
        assert text == reference.render()
        assert 'otel_metric_overflow="true"' in text
    finally:
        batched.shutdown()
        reference.provider.shutdown()


def test_names_beyond_the_caps_are_recorded_as_other_and_counted() -> None:
    """A client naming a new model and task in every request: the series keep the served model and
    the first names, the rest read "other"; every record is still recorded once."""
    exporter = MetricsExporter(golden_snapshot, resource=Resource({}), max_model_labels=3, model="served")
    try:
        records = [
            make_record(request_id=f"r{k}", model=f"m-{k}", task=f"t-{k}") for k in range(MAX_TASKS + 10)
        ]
        assert exporter.record([make_record(request_id="s", model="served"), *records]) == MAX_TASKS + 11
        text = exporter.render().decode()
        families = text_string_to_metric_families(text)
        models = {s.labels.get("gen_ai_request_model") for f in families for s in f.samples}
        assert {"served", "m-0", "m-1", "other"} <= models and "m-2" not in models
        assert 'jouletrace_task="other"' in text and f'jouletrace_task="t-{MAX_TASKS - 2}"' in text
        n = MAX_TASKS + 10  # each record's names are looked up once for all its series
        folded_models = n - 2  # "served" was named first, then m-0 and m-1 filled the 3
        folded_tasks = n - (MAX_TASKS - 1)  # "chat" (the served record's) and t-0 .. t-62 fill 64
        assert exporter.labels_folded == folded_models + folded_tasks
    finally:
        exporter.shutdown()


@pytest.mark.parametrize(
    ("energy_j", "output_units", "frames", "fps", "left_out"),
    [
        (5.0, 1e-300, "1e-300", "1e300", "frame"),  # 5 J / 1e-600 frames overflows: left out
        # Adversarial probe: 81 frames at 5e-324 fps is an infinity of seconds: recorded at 0.0 J per
        # video second (its quotient finite, the amount not)
        (1.16e6, 1.0, "81", "5e-324", "video_second"),
    ],
)
def test_a_video_with_a_hostile_frame_count_or_rate_records_only_finite_values(
    energy_j: float, output_units: float, frames: str, fps: str, left_out: str
) -> None:
    exporter = MetricsExporter(golden_snapshot, resource=Resource({}))
    try:
        video = make_record(
            model=VIDEO,
            unit="video",
            energy_j=energy_j,
            output_units=output_units,
            attributes={"video_frames": frames, "video_fps": fps},
        )
        assert exporter.record([video]) == 1
        text = exporter.render().decode()
        values = [s.value for f in text_string_to_metric_families(text) for s in f.samples]
        assert all(math.isfinite(v) for v in values)
        assert f'jouletrace_unit="{left_out}"' not in text
    finally:
        exporter.shutdown()


def test_joules_per_output_unit_that_overflows_is_none_not_infinity_json_cannot_carry() -> None:
    rec = make_record(model=VIDEO, unit="image", energy_j=900.0, output_units=5e-324)
    assert rec.joules_per_output_unit is None and per_unit_j(RecordBatch.of([rec]).values[0]) is None
    assert json.loads(json.dumps(rec.to_json(), allow_nan=False))["joules_per_output_unit"] is None


def test_llm_tenant_counts_are_integers_summed_in_order() -> None:
    exporter = MetricsExporter(golden_snapshot, resource=Resource({}))
    try:
        exporter.record([make_record(request_id=f"r{k}", output_tokens=3) for k in range(4)])
        text = exporter.render().decode()
        assert 'gen_ai_server_tenant_output_tokens_total{gen_ai_request_model="' + LLM in text
        assert any(
            line.endswith(" 12.0") for line in text.splitlines() if "tenant_output_tokens_total{" in line
        )
    finally:
        exporter.shutdown()
