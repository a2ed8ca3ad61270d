"""The /metrics text: names, units, types and labels, pinned by a golden file.

Regenerate the golden file after an intended change with
``JOULETRACE_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/sidecar/export/test_metrics.py``
and review the diff like code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.attribution.records import Snapshot
from sidecar.export import metrics as metrics_module
from sidecar.export.metrics import ENERGY_PER_TOKEN_BUCKETS_J, REQUEST_ENERGY_BUCKETS_J, MetricsExporter
from tests.sidecar.export.factories import golden_records, golden_snapshot, make_record

GOLDEN = Path(__file__).with_name("golden_metrics.txt")

# Prometheus family name (as the parser reports it, counters without _total) -> type.
EXPECTED_TYPES = {
    "target_info": "gauge",
    "hw_energy_joules": "counter",
    "hw_power_watts": "gauge",
    "hw_gpu_utilization": "gauge",
    "hw_gpu_memory_usage_bytes": "gauge",
    "jouletrace_gpu_sm_clock_hertz": "gauge",
    "jouletrace_gpu_power_limit_watts": "gauge",
    "jouletrace_meter_phase_locked": "gauge",
    "jouletrace_meter_phase_error_seconds": "gauge",
    "gen_ai_server_energy_joules": "counter",
    "gen_ai_server_request_energy_joules": "histogram",
    "gen_ai_server_energy_per_output_token_joules": "histogram",
    "gen_ai_server_energy_per_output_unit_joules": "histogram",
    "gen_ai_server_output_units": "counter",
    "gen_ai_server_tenant_energy_joules": "counter",
    "gen_ai_server_tenant_output_tokens": "counter",
    "gen_ai_server_throughput_per_watt": "gauge",
    "jouletrace_meter_update_period_seconds": "gauge",
    "jouletrace_attribution_lag_seconds": "gauge",
    "jouletrace_events_dropped": "counter",
    "jouletrace_job_failures": "counter",
    "jouletrace_conservation_error_joules": "gauge",
    "jouletrace_meter_resets": "counter",
    "jouletrace_requests_pending": "gauge",
    "jouletrace_tap_events": "counter",
    "jouletrace_tap_token_mismatch": "gauge",
    "jouletrace_server_state": "gauge",
    "jouletrace_model_static_power_watts": "gauge",
    "jouletrace_model_busy_power_watts": "gauge",
    "jouletrace_model_energy_per_step_joules": "gauge",
    "jouletrace_model_energy_per_token_joules": "gauge",
    "jouletrace_model_energy_per_context_token_joules": "gauge",
    "jouletrace_model_energy_per_denoise_unit_joules": "gauge",
    "jouletrace_model_fit_r2": "gauge",
    "jouletrace_model_fit_condition": "gauge",
    "jouletrace_model_fit_ok": "gauge",
    "jouletrace_model_step_time_spread": "gauge",
    "jouletrace_model_floor_age_seconds": "gauge",
}
ENERGY_OR_POWER = re.compile(r"_(joules|watts)(_total)?$|_per_s_W$|^hw_|^jouletrace_model_")


@pytest.fixture
def exporter() -> Iterator[MetricsExporter]:
    snap = golden_snapshot()
    exp = MetricsExporter(lambda: snap, resource=Resource({"service.name": "jouletrace-sidecar"}))
    yield exp
    exp.shutdown()


def normalize(text: str) -> str:
    """Blank what legitimately varies between builds: the scope (package) version."""
    return re.sub(r'otel_scope_version="[^"]*"', 'otel_scope_version=""', text)


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    ]


def test_metrics_text_matches_golden_file(exporter: MetricsExporter) -> None:
    exporter.record(golden_records())
    text = normalize(exporter.render().decode())
    if os.environ.get("JOULETRACE_REGEN_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), (
        "metrics changed; regenerate with JOULETRACE_REGEN_GOLDEN=1 if intended"
    )


def test_every_family_has_its_type_and_unit_suffix(exporter: MetricsExporter) -> None:
    exporter.record(golden_records())
    text = exporter.render().decode()
    assert families(text) == EXPECTED_TYPES
    assert "# TYPE hw_energy_joules_total counter" in text
    assert "# TYPE gen_ai_server_energy_joules_total counter" in text
    assert "# TYPE gen_ai_server_request_energy_joules histogram" in text


def test_module_docstring_lists_every_exported_name() -> None:
    doc = metrics_module.__doc__ or ""
    for name, kind in EXPECTED_TYPES.items():
        exposed = f"{name}_total" if kind == "counter" else name
        assert re.search(rf"\b{exposed}\b", doc), exposed


def test_every_family_has_a_description_naming_its_meaning(exporter: MetricsExporter) -> None:
    exporter.record(golden_records())
    for family in text_string_to_metric_families(exporter.render().decode()):
        assert len(family.documentation) > 10, family.name


def test_request_id_is_never_a_label(exporter: MetricsExporter) -> None:
    exporter.record(golden_records())
    text = exporter.render().decode()
    assert "req-000" not in text
    assert "request_id" not in text
    assert "trace_id" not in text


def test_one_render_reads_one_snapshot() -> None:
    calls = 0

    def snapshot() -> Snapshot:
        nonlocal calls
        calls += 1
        return golden_snapshot()

    exp = MetricsExporter(snapshot, resource=Resource({}))
    exp.render()
    assert calls == 1
    exp.shutdown()


def test_counters_follow_the_latest_snapshot_across_scrapes() -> None:
    current = [golden_snapshot()]
    exp = MetricsExporter(lambda: current[0], resource=Resource({}))
    first = samples(exp.render().decode(), "hw_energy_joules_total")[0][1]
    device = current[0].devices[0]
    current[0] = replace(current[0], devices=(replace(device, energy_j=device.energy_j + 500.0),))
    second = samples(exp.render().decode(), "hw_energy_joules_total")[0][1]
    assert second == pytest.approx(first + 500.0)
    exp.shutdown()


def test_each_exporter_has_its_own_registry_and_the_global_one_stays_clean() -> None:
    a = MetricsExporter(golden_snapshot, resource=Resource({}))
    b = MetricsExporter(golden_snapshot, resource=Resource({}))
    a.record([make_record()])
    assert "gen_ai_server_request_energy_joules_count" in a.render().decode()
    assert "gen_ai_server_request_energy_joules_count" not in b.render().decode()
    assert a.registry is not b.registry
    assert b"hw_energy_joules_total" not in generate_latest(REGISTRY)
    a.shutdown()
    b.shutdown()


def test_device_gauge_without_a_value_is_skipped(exporter: MetricsExporter) -> None:
    text = exporter.render().decode()
    power = samples(text, "hw_power_watts")
    assert [labels["hw_id"] for labels, _ in power] == ["GPU-8f4c2a1e-0000-4000-8000-000000000000"]
    assert len(samples(text, "jouletrace_gpu_sm_clock_hertz")) == 1
    assert samples(text, "jouletrace_gpu_sm_clock_hertz")[0][1] == pytest.approx(1.98e9)
    assert len(samples(text, "hw_energy_joules_total")) == 2


def test_update_period_absent_when_not_measured_yet() -> None:
    snap = golden_snapshot()
    snap = replace(snap, stats=replace(snap.stats, update_period_s=None))
    exp = MetricsExporter(lambda: snap, resource=Resource({}))
    assert "jouletrace_meter_update_period_seconds" not in exp.render().decode()
    exp.shutdown()


def test_estimate_is_labelled_on_every_energy_and_power_series() -> None:
    snap = golden_snapshot(energy_source="estimate")
    exp = MetricsExporter(lambda: snap, resource=Resource({}))
    exp.record([make_record(energy_source="estimate")])
    text = exp.render().decode()
    checked = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if ENERGY_OR_POWER.search(sample.name) or ENERGY_OR_POWER.search(family.name):
                assert sample.labels.get("energy_source") == "estimate", sample
                checked += 1
    assert checked > 30
    exp.shutdown()


def test_non_final_records_stay_out_of_the_histograms(exporter: MetricsExporter) -> None:
    assert exporter.record([make_record(final=False)]) == 0
    assert "gen_ai_server_request_energy_joules" not in exporter.render().decode()


def test_energy_per_output_token_only_for_token_requests_with_output(exporter: MetricsExporter) -> None:
    assert exporter.record(golden_records()) == 5
    text = exporter.render().decode()
    counts = samples(text, "gen_ai_server_energy_per_output_token_joules_count")
    assert sum(v for _, v in counts) == 2  # req-0001 and req-0002; not zero-output, image, video
    total = sum(v for _, v in samples(text, "gen_ai_server_energy_per_output_token_joules_sum"))
    assert total == pytest.approx(12.5 / 250 + 40.0 / 100)


def test_fit_gauges_absent_until_the_fit_has_seen_a_tick() -> None:
    snap = golden_snapshot(fit_ticks=0)
    exp = MetricsExporter(lambda: snap, resource=Resource({}))
    assert "jouletrace_model_" not in exp.render().decode()
    exp.shutdown()


def test_fitted_token_energy_is_split_by_phase(exporter: MetricsExporter) -> None:
    points = samples(exporter.render().decode(), "jouletrace_model_energy_per_token_joules")
    assert {labels["jouletrace_phase"]: v for labels, v in points} == {"prefill": 0.0004, "decode": 0.012}


def test_bucket_boundaries_span_a_cpu_request_to_a_video() -> None:
    assert REQUEST_ENERGY_BUCKETS_J[0] == 0.01
    assert REQUEST_ENERGY_BUCKETS_J[-1] >= 1.16e6
    assert ENERGY_PER_TOKEN_BUCKETS_J[0] == 1e-4
    assert ENERGY_PER_TOKEN_BUCKETS_J[-1] == 10.0
    for bounds in (REQUEST_ENERGY_BUCKETS_J, ENERGY_PER_TOKEN_BUCKETS_J):
        assert list(bounds) == sorted(set(bounds))


def test_video_sized_request_lands_in_a_finite_bucket(exporter: MetricsExporter) -> None:
    exporter.record(
        [make_record(model="v", unit="video", energy_j=1.16e6, output_tokens=0, output_units=1.0)]
    )
    buckets = samples(exporter.render().decode(), "gen_ai_server_request_energy_joules_bucket")
    finite = [v for labels, v in buckets if labels["le"] == "2e+06" or labels["le"] == "2000000.0"]
    assert finite == [1.0]


def test_shutdown_unregisters_the_reader_and_is_idempotent() -> None:
    exp = MetricsExporter(golden_snapshot, resource=Resource({}))
    exp.shutdown()
    exp.shutdown()
    assert exp.render() == b""


def test_default_resource_names_the_service_in_target_info() -> None:
    exp = MetricsExporter(golden_snapshot)
    info = samples(exp.render().decode(), "target_info")
    assert info[0][0]["service_name"] == "jouletrace-sidecar"
    exp.shutdown()
