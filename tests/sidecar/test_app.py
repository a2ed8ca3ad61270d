"""The whole sidecar path on a simulated GPU and a fake clock: meter -> timeline -> attribution -> exports."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.app import Sidecar
from sidecar.config import SidecarConfig
from sidecar.export.store import Ledger
from sidecar.sim.meter import SimFeeder, SimMeter
from sidecar.sim.run import MODEL_NAME, SimConfig, SimRun, simulate
from sidecar.taps.tap import SourceTap
from tests.sidecar.export.factories import make_record
from tests.support import FakeClock


@pytest.fixture(scope="module")
def run() -> SimRun:
    base = SimConfig()
    return simulate(replace(base, workload=replace(base.workload, n_requests=60, start_s=1.0)), seed=3)


def drive(run: SimRun, clock: FakeClock, sidecar: Sidecar, until_s: float) -> None:
    """Poll every 20 ms and tick every 100 ms of fake time."""
    step = 0
    while clock.t_s < until_s:
        clock.advance(0.02)
        step += 1
        sidecar.poller.read_once()
        if step % 5 == 0:
            sidecar.tick()


def samples(text: bytes, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if s.name == name:
                out.append((s.labels, s.value))
    return out


def simulated(run: SimRun, clock: FakeClock, ledger: Ledger, **kw: Any) -> Sidecar:
    """A sidecar on the simulated GPU of ``run``, its work fed from the simulation's own events."""
    config = SidecarConfig(meter="sim", model=MODEL_NAME, settle_s=0.5, fit_warmup_ticks=50)
    meter = SimMeter(run, clock=clock, t0=0.0)
    return Sidecar(config, meter, taps=[SourceTap(SimFeeder(run, 0.0))], clock=clock, ledger=ledger, **kw)


@pytest.mark.parametrize("write_every_s", [0.0, 1.0])  # each tick's records, or written together
def test_every_request_gets_a_final_conserved_record_and_metrics(run: SimRun, write_every_s: float) -> None:
    clock = FakeClock(0.0)
    ledger = Ledger(":memory:", write_every_s=write_every_s)
    sidecar = simulated(run, clock, ledger)
    assert sidecar.ready()[0] is False  # no counter update seen yet
    drive(run, clock, sidecar, run.duration_s / 2)
    assert sidecar.ready()[0] is True
    live = [r for r in run.requests if sidecar.attributor.record(r.request_id) is not None]
    assert live, "some requests are in flight half way through"
    provisional = sidecar.lookup(live[0].request_id)
    assert provisional is not None and provisional["final"] is False
    drive(run, clock, sidecar, run.duration_s + 2.0)
    sidecar.tick(seal_until_s=math.inf)

    assert ledger.count() == len(run.requests)
    record = sidecar.lookup(run.requests[0].request_id)
    assert record is not None and record["final"] is True and record["energy_source"] == "simulated"
    totals = sidecar.attributor.totals
    assert totals.conservation_error_j < 1e-9 * totals.measured_j
    attributed = sum(ledger.get(r.request_id)["energy_j"] for r in run.requests)  # type: ignore[index]
    assert attributed == pytest.approx(totals.attributed_j, rel=1e-9)

    text = sidecar.exporter.render()
    counts = samples(text, "gen_ai_server_request_energy_joules_count")  # one series per task
    assert sum(v for _, v in counts) == len(run.requests)
    assert {lab["jouletrace_task"] for lab, _ in counts} == {q.kind for q in run.workload}
    assert all(lab["energy_source"] == "simulated" for lab, _ in counts)
    phases = {lab["jouletrace_phase"]: v for lab, v in samples(text, "gen_ai_server_energy_joules_total")}
    assert phases["prefill"] > 0 and phases["decode"] > 0 and phases["idle"] > 0
    assert sum(phases.values()) == pytest.approx(totals.measured_j, rel=1e-6)
    ((_, tokens),) = samples(text, "gen_ai_server_output_units_total")
    assert tokens == sum(r.output_tokens for r in run.requests)
    ((_, period),) = samples(text, "jouletrace_meter_update_period_seconds")
    assert period == pytest.approx(0.1, rel=0.05)


def test_without_a_ledger_file_final_records_are_looked_up_from_an_in_memory_ledger(run: SimRun) -> None:
    clock = FakeClock(0.0)
    config = SidecarConfig(meter="sim", model=MODEL_NAME, settle_s=0.5, fit_warmup_ticks=50, ledger_path="")
    meter = SimMeter(run, clock=clock, t0=0.0)
    sidecar = Sidecar(config, meter, taps=[SourceTap(SimFeeder(run, 0.0))], clock=clock)
    drive(run, clock, sidecar, run.duration_s + 2.0)
    sidecar.tick(seal_until_s=math.inf)
    assert sidecar.ledger.count() == len(run.requests)
    record = sidecar.lookup(run.requests[-1].request_id)
    assert record is not None and record["final"] is True
    sidecar.close()


def test_a_restarted_sidecar_starts_from_the_idle_floor_its_predecessor_measured(
    run: SimRun, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The floor is saved in the ledger; a sidecar restarted under load (no idle yet) restores it."""
    path = tmp_path / "ledger.db"
    config = SidecarConfig(meter="sim", model=MODEL_NAME, settle_s=0.5)
    clock = FakeClock(0.0)
    first = Sidecar(
        config,
        SimMeter(run, clock=clock, t0=0.0),
        taps=[SourceTap(SimFeeder(run, 0.0))],
        clock=clock,
        ledger=Ledger(path),
    )
    drive(run, clock, first, 10.0)
    measured = first.attributor.rule.fit.floor.power_w(clock.t_s)  # type: ignore[attr-defined]
    assert measured == pytest.approx(run.config.gpu.idle_w, rel=0.02)
    first.floor_keeper.save(clock.t_s, force=True)
    first.close()
    clock2 = FakeClock(0.0)
    second = Sidecar(config, SimMeter(run, clock=clock2, t0=0.0), clock=clock2, ledger=Ledger(path))
    reading = second.attributor.rule.fit.floor.reading(0.0)  # type: ignore[attr-defined]
    assert reading.source == "restored"
    assert reading.power_w == pytest.approx(measured)
    second.close()


@pytest.mark.parametrize("write_every_s", [0.0, 1.0])
def test_a_request_final_in_the_ledger_already_is_kept_and_counted_once(
    run: SimRun, write_every_s: float
) -> None:
    """As after a restart on the same ledger: a request stored final by the sidecar before (here
    12,345 J) that this one finalizes again keeps its stored record, is counted ``duplicate_kept``
    and enters neither the per-request histograms nor ``on_final`` a second time."""
    clock = FakeClock(0.0)
    ledger = Ledger(":memory:", write_every_s=write_every_s)
    first = run.requests[0].request_id
    ledger.put_many([make_record(request_id=first, energy_j=12_345.0)])
    handed: list[str] = []
    sidecar = simulated(
        run, clock, ledger, on_final=lambda records: handed.extend(r.request_id for r in records)
    )
    drive(run, clock, sidecar, run.duration_s + 2.0)
    sidecar.tick(seal_until_s=math.inf)
    assert ledger.get(first)["energy_j"] == 12_345.0  # type: ignore[index]
    assert ledger.counts["duplicate_kept"] == 1 and ledger.count() == len(run.requests)
    assert first not in handed and len(handed) == len(run.requests) - 1
    counts = samples(sidecar.exporter.render(), "gen_ai_server_request_energy_joules_count")
    assert sum(v for _, v in counts) == len(run.requests) - 1


def test_records_written_together_are_served_while_they_wait_and_counted_as_they_are_written(
    run: SimRun,
) -> None:
    """``ledger_write_every_s``: a final record waits up to a second of the tick's clock to be
    written; meanwhile it is found final, and it is counted (metrics, ``on_final``) when written."""
    clock = FakeClock(0.0)
    ledger = Ledger(":memory:", write_every_s=1.0)
    handed: list[str] = []
    sidecar = simulated(run, clock, ledger, on_final=lambda rs: handed.extend(r.request_id for r in rs))
    drive(run, clock, sidecar, run.duration_s + 2.0)
    final = [r.request_id for r in run.requests if sidecar.attributor.is_final(r.request_id)]
    assert len(final) == len(run.requests)
    assert all(sidecar.lookup(rid)["final"] is True for rid in final)  # type: ignore[index]
    assert len(handed) == ledger.count() <= len(final)  # counted as written, not before
    counts = samples(sidecar.exporter.render(), "gen_ai_server_request_energy_joules_count")
    assert sum(v for _, v in counts) == len(handed)
    sidecar.tick(seal_until_s=math.inf)  # the stop writes what waits, and counts it
    assert sorted(handed) == sorted(final) and ledger.count() == len(final)


def test_a_burst_of_finals_goes_on_a_batch_at_a_time_and_all_of_it(
    run: SimRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sidecar.app.FINAL_BATCH", 4)
    clock = FakeClock(0.0)
    handed: list[int] = []
    sidecar = simulated(run, clock, Ledger(":memory:"), on_final=lambda recs: handed.append(len(recs)))
    drive(run, clock, sidecar, 2.0)  # the fit warms up; the rest comes in one seal below
    sidecar.poller.read_once()
    before = len(handed)
    clock.advance(run.duration_s + 2.0 - clock.t_s)
    sidecar.poller.read_once()
    published = sidecar.tick(seal_until_s=math.inf)
    batches = handed[before:]
    assert len(batches) > 1 and max(batches) <= 4  # each batch written and handed on before the next
    assert published == sum(batches) and sidecar.ledger.count() == len(run.requests)
    assert sidecar.attributor.finals_left == 0 and len(sidecar.attributor.requests) == 0
