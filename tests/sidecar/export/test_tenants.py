"""Tenant labels stay bounded: the heaviest get their own series, the rest are 'other'."""

from __future__ import annotations

from sidecar.export.tenants import NO_TENANT, OTHER, TenantLabels


def test_at_most_top_n_tenants_are_named_whatever_the_clients_send() -> None:
    labels = TenantLabels(top_n=3, tracked=10)
    seen = {labels.label(f"t{i}", 1.0) for i in range(10_000)}
    assert len(labels.named) == 3 and seen == labels.named | {OTHER}


def test_a_heavy_tenant_arriving_late_is_named_while_a_slot_is_free() -> None:
    labels = TenantLabels(top_n=2, tracked=4)
    assert labels.label("small", 1.0) == "small"
    for i in range(50):  # a flood of one-off tenants, never heavy
        labels.label(f"noise{i}", 0.001)
    assert labels.label("heavy", 100.0) == "heavy"
    assert labels.label("late", 0.0001) == OTHER  # slots full


def test_a_named_tenant_keeps_its_label_and_no_tenant_is_none() -> None:
    labels = TenantLabels(top_n=1)
    assert labels.label("acme", 1.0) == "acme"
    assert labels.label("acme", 0.0) == "acme"
    assert labels.label(None, 5.0) == NO_TENANT and labels.label("", 5.0) == NO_TENANT


def test_the_exporter_labels_tenant_energy_with_bounded_tenants() -> None:
    from dataclasses import replace

    from prometheus_client.parser import text_string_to_metric_families

    from sidecar.export.metrics import MetricsExporter
    from tests.sidecar.export.factories import golden_records, golden_snapshot

    exporter = MetricsExporter(golden_snapshot, tenant_top_n=1)
    one = next(r for r in golden_records() if r.unit == "token" and r.final and r.output_tokens > 0)
    tenants = ["acme", "acme", "zeta", None]
    records = [replace(one, attributes={"jouletrace.tenant": t} if t else {}) for t in tenants]
    exporter.record(records)
    families = {f.name: f for f in text_string_to_metric_families(exporter.render().decode())}
    by_tenant = {
        s.labels["jouletrace_tenant"]: s.value for s in families["gen_ai_server_tenant_energy_joules"].samples
    }
    assert set(by_tenant) == {"acme", "other", "none"}
    assert by_tenant["acme"] == 2 * one.energy_j
    exporter.shutdown()
