"""Records whose energy is unknown (their work was lost) stay out of the histograms."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families

from sidecar.export.metrics import MetricsExporter
from tests.sidecar.export.factories import golden_snapshot, make_record


def _count(text: str, name: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def test_an_energy_unknown_record_enters_neither_the_per_request_nor_the_per_token_histogram() -> None:
    exporter = MetricsExporter(golden_snapshot, resource=Resource({}))
    try:
        known = make_record(request_id="known", output_tokens=10)
        unknown = make_record(
            request_id="lost",
            energy_j=0.0,
            output_tokens=10,
            attributes={"energy_unknown": "true", "energy_unknown_reason": "work_lost"},
        )
        assert exporter.record([known, unknown]) == 1
        text = exporter.render().decode()
        assert _count(text, "gen_ai_server_request_energy_joules_count") == 1
        assert _count(text, "gen_ai_server_energy_per_output_token_joules_count") == 1
    finally:
        exporter.shutdown()
