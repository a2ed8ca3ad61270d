"""Tenant labels stay bounded: the heaviest get their own series, the rest are 'other'."""

from __future__ import annotations

import random

from prometheus_client.parser import text_string_to_metric_families

from sidecar.attribution.records import RequestEnergy
from sidecar.export.metrics import MetricsExporter
from sidecar.export.tenants import NO_TENANT, OTHER, TenantLabels
from tests.sidecar.export.factories import golden_snapshot, make_record


def test_a_flood_of_one_off_tenants_takes_no_slot_and_a_heavy_tenant_still_gets_one() -> None:
    labels = TenantLabels(top_n=3)
    seen = [labels.label(f"t{i}", 1.0) for i in range(10_000)]
    assert seen[:3] == ["t0", "t1", "t2"]  # alone, each had a slot: nothing to decide yet
    assert set(seen[3:]) == {OTHER} and labels.named == {"t0", "t1", "t2"}
    assert [labels.label("heavy", 500.0) for _ in range(2)] == [OTHER, "heavy"]  # 1/12 of the energy
    assert "heavy" in labels.named and len(labels.drain_retired()) == 1


def test_at_most_top_n_tenants_are_named_whatever_the_clients_send() -> None:
    labels = TenantLabels(top_n=3, tracked=10)  # too small a table to tell them apart: slots churn
    rng = random.Random(3)
    for i in range(10_000):
        label = labels.label(f"t{rng.randrange(40)}" if i % 2 else f"one-off{i}", rng.random())
        assert label in labels.named | {OTHER} and len(labels.named) <= 3


def test_with_more_tenants_than_slots_none_is_named_on_its_first_records_alone() -> None:
    labels = TenantLabels(top_n=1)  # more than 4 records with a tenant before any is named
    labels.label("zeta", 1.0)  # alone: named
    # acme has twice zeta's energy at its second record, but there are only 3 records to judge by
    assert [labels.label("acme", 1.0) for _ in range(4)] == [OTHER] * 3 + ["acme"]
    assert labels.drain_retired() == ["zeta"]
    assert labels.label("acme", 0.0) == "acme"
    assert labels.label(None, 5.0) == NO_TENANT and labels.label("", 5.0) == NO_TENANT


def test_while_every_tenant_fits_each_has_its_own_series_at_once() -> None:
    labels = TenantLabels(top_n=3)  # a small deployment: three teams
    assert [labels.label(t, 10.0) for t in ("team-a", "team-b", "acme", "team-a")] == [
        "team-a",
        "team-b",
        "acme",
        "team-a",
    ]


def test_one_off_tenants_first_then_a_heavy_one_the_heavy_one_is_named() -> None:
    """The probe's case: three one-off tenants of 10 J, then BIG sends 12 requests of 125 J."""
    labels = TenantLabels(top_n=3)
    for i in range(3):
        labels.label(f"junk-{i}", 10.0)  # alone: named (before, they kept the slots for ever)
    assert [labels.label("BIG", 125.0) for _ in range(12)][-3:] == ["BIG"] * 3
    assert "BIG" in labels.named and len(labels.named) == 3 and len(labels.drain_retired()) == 1


def test_a_heavy_tenant_arriving_late_takes_the_slot_of_a_light_one() -> None:
    labels = TenantLabels(top_n=2)
    assert [labels.label("small", 1.0) for _ in range(9)] == ["small"] * 9  # alone: from its first
    assert labels.label("noise0", 0.001) == "noise0"  # the second tenant: a slot each
    for i in range(1, 50):  # a flood of one-off tenants, never heavy
        assert labels.label(f"noise{i}", 0.001) == OTHER
    assert labels.label("heavy", 100.0) == "heavy"
    assert labels.label("late", 0.0001) == OTHER  # slots full, and light
    assert labels.named == {"small", "heavy"} and labels.drain_retired() == ["noise0"]


def test_a_tenant_twice_as_heavy_takes_the_weakest_slot() -> None:
    labels = TenantLabels(top_n=1)
    assert [labels.label("early", 1.0) for _ in range(5)][-1] == "early"
    assert [labels.label("big", 2.5) for _ in range(4)] == [OTHER] * 4  # 10 J: not over twice 5 J
    assert labels.label("big", 2.5) == "big"
    assert labels.drain_retired() == ["early"] and not labels.retired
    assert labels.label("early", 1.0) == OTHER


def test_two_tenants_of_equal_weight_do_not_trade_the_slot() -> None:
    """A one-off tenant first, then a and b alternate; which is ahead changes every phase."""
    labels = TenantLabels(top_n=1)
    labels.label("junk", 10.0)
    history: list[frozenset[str]] = []  # the named tenants, each time they change
    for phase in range(20):
        a_j, b_j = (12.0, 8.0) if phase % 2 == 0 else (8.0, 12.0)
        for _ in range(50 if phase == 0 else 100):
            labels.label("a", a_j)
            labels.label("b", b_j)
            if labels.named and labels.named != (history[-1] if history else None):
                history.append(labels.named)
    assert len(history) <= 2 and history[-1] <= {"a", "b"}  # named once, changed at most once
    assert len(labels.retired) <= 1


def test_tenants_spelled_like_the_shared_labels_are_never_named() -> None:
    labels = TenantLabels(top_n=1)
    assert {labels.label(OTHER, 1.0) for _ in range(10)} == {OTHER}
    assert {labels.label(NO_TENANT, 1.0) for _ in range(10)} == {OTHER} and not labels.named


def test_the_counts_are_space_saving_counts() -> None:
    """The lazy heap evicts the smallest count, as a scan of the table would."""
    rng = random.Random(5)
    labels, reference = TenantLabels(top_n=2, tracked=16), dict[str, float]()
    for _ in range(5_000):
        tenant, energy_j = f"t{int(rng.paretovariate(1.0))}", rng.random()
        labels.label(tenant, energy_j)
        if tenant not in reference and len(reference) >= 16:
            smallest = min(reference, key=reference.__getitem__)
            reference[tenant] = reference.pop(smallest)
        reference[tenant] = reference.get(tenant, 0.0) + energy_j
    assert labels._energy_j == reference


def _tenant_series(exporter: MetricsExporter) -> dict[str, set[str]]:
    """Per tenant family, the tenant labels of its series."""
    families = text_string_to_metric_families(exporter.render().decode())
    return {
        f.name: {s.labels["jouletrace_tenant"] for s in f.samples}
        for f in families
        if f.name.startswith("gen_ai_server_tenant_")
    }


def _chat(tenant: str | None, energy_j: float) -> RequestEnergy:
    return make_record(energy_j=energy_j, attributes={"jouletrace.tenant": tenant} if tenant else {})


def _tenant_energy(exporter: MetricsExporter) -> dict[str, float]:
    """The tenant energy series as the /metrics page gives them, by tenant label."""
    families = text_string_to_metric_families(exporter.render().decode())
    return {
        s.labels["jouletrace_tenant"]: s.value
        for f in families
        if f.name == "gen_ai_server_tenant_energy_joules"
        for s in f.samples
    }


def test_the_exporter_labels_tenant_energy_with_bounded_tenants() -> None:
    exporter = MetricsExporter(golden_snapshot, tenant_top_n=1)
    try:
        exporter.record([_chat(t, 12.5) for t in ["acme"] * 5 + ["zeta", None]])
        by_tenant = _tenant_energy(exporter)
        assert by_tenant == {"acme": 5 * 12.5, "other": 12.5, "none": 12.5}  # zeta: no slot left
    finally:
        exporter.shutdown()


def test_the_exporter_ends_a_retired_tenants_series_and_stays_bounded() -> None:
    """An early light tenant is named, then 10,000 one-off tenants and three heavy ones arrive."""
    exporter = MetricsExporter(golden_snapshot, tenant_top_n=1)
    try:
        exporter.record([_chat("early", 12.5) for _ in range(8)])
        assert list(_tenant_series(exporter).values()) == [{"early"}] * 2
        for block in range(10):
            records = []
            for k in range(1000):
                if k % 100 == 0:
                    records += [_chat("h0", 125.0), _chat("h1", 90.0), _chat("h2", 60.0), _chat(None, 1.0)]
                records.append(_chat(f"one-off{block}-{k}", 0.125))
            exporter.record(records)
            for tenants in _tenant_series(exporter).values():
                assert len(tenants) <= 1 + 2 and "early" not in tenants
        assert set(map(frozenset, _tenant_series(exporter).values())) == {frozenset({"h0", "other", "none"})}
    finally:
        exporter.shutdown()


def test_a_request_with_no_output_tokens_still_counts_in_its_tenants_energy() -> None:
    """Adversarial probe: a 100,000-token prompt aborted before its first token (500 J) was in the
    request-energy histogram and in no tenant series, not even "other"."""
    exporter = MetricsExporter(golden_snapshot)
    try:
        aborted = make_record(
            request_id="prefill-only",
            energy_j=500.0,
            prompt_tokens=100_000,
            output_tokens=0,
            output_units=0.0,
            attributes={"jouletrace.tenant": "heavy"},
        )
        exporter.record([_chat("acme", 10.0), aborted])
        by_tenant = _tenant_energy(exporter)
        assert by_tenant == {"acme": 10.0, "heavy": 500.0}
    finally:
        exporter.shutdown()
