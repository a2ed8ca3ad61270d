"""The sidecar when its meter fails: a lost device makes it unready, a failed read is counted and passes.

Each test drives the sidecar's own poller (``Poller.read_once``, the body of
its thread's loop) and ``tick``/``lookup``/``ready`` by hand on a fake clock,
with a scripted fake meter; nothing runs in the background.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar.app import Sidecar
from sidecar.attribution.events import Phase, RequestInfo, WorkEvent
from sidecar.config import SidecarConfig
from sidecar.errors import DeviceLost, MeterReadError
from sidecar.export.store import RETRY_EVERY_S, Ledger
from sidecar.meters.base import DeviceStatus, Reading
from tests.sidecar.export.factories import make_record
from tests.sidecar.scripted_meter import POLL_S, ScriptedMeter, poll_for
from tests.support import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(100.0)


@pytest.fixture
def make_sidecar(clock: FakeClock) -> Iterator[Callable[[ScriptedMeter], Sidecar]]:
    built: list[Sidecar] = []

    def make(meter: ScriptedMeter) -> Sidecar:
        sidecar = Sidecar(SidecarConfig(meter="sim", settle_s=0.5), meter, clock=clock)
        built.append(sidecar)
        return sidecar

    yield make
    for sidecar in built:
        sidecar.close()


def test_a_sidecar_is_unready_until_the_counter_has_updated_then_ready(
    clock: FakeClock, make_sidecar: Callable[[ScriptedMeter], Sidecar]
) -> None:
    sidecar = make_sidecar(ScriptedMeter(clock))
    ok, reason = sidecar.ready()
    assert not ok and "waiting for the energy counter" in reason
    poll_for(sidecar, clock, 1.0)
    assert sidecar.ready() == (True, "simulated energy from 1 device(s)")


def test_a_lost_device_makes_the_sidecar_unready_with_the_reason(
    clock: FakeClock, make_sidecar: Callable[[ScriptedMeter], Sidecar]
) -> None:
    meter = ScriptedMeter(clock, fail=lambda n: DeviceLost("GPU-fake fell off the bus") if n > 50 else None)
    sidecar = make_sidecar(meter)
    poll_for(sidecar, clock, 0.9)  # 45 good reads
    assert sidecar.ready()[0]
    poll_for(sidecar, clock, 0.2)  # read 51 finds the device gone
    ok, reason = sidecar.ready()
    assert not ok
    assert reason == "meter lost its device: GPU-fake fell off the bus"
    assert sidecar.lost == "GPU-fake fell off the bus"
    assert sidecar.meter_errors == 0  # a lost device is not a transient read error


def test_after_the_device_is_lost_the_meter_is_no_longer_read(
    clock: FakeClock, make_sidecar: Callable[[ScriptedMeter], Sidecar]
) -> None:
    meter = ScriptedMeter(clock, fail=lambda n: DeviceLost("gone") if n >= 3 else None)
    sidecar = make_sidecar(meter)
    poll_for(sidecar, clock, 1.0)
    assert (meter.reads, meter.status_reads) == (3, 1)  # status was read once, on the first poll
    poll_for(sidecar, clock, 1.0)
    assert (meter.reads, meter.status_reads) == (3, 1)


def test_after_the_device_is_lost_ticks_and_lookups_still_answer(
    clock: FakeClock, make_sidecar: Callable[[ScriptedMeter], Sidecar]
) -> None:
    meter = ScriptedMeter(clock, fail=lambda n: DeviceLost("gone") if n > 40 else None)
    sidecar = make_sidecar(meter)
    t_start = clock.t_s
    sidecar.add_request(RequestInfo("req-1", model="m", start_s=t_start))
    sidecar.add_work(WorkEvent("req-1", t_start + 0.1, t_start + 0.3, Phase.DECODE, 10.0))
    poll_for(sidecar, clock, 1.5)
    assert sidecar.lost == "gone"
    sidecar.tick()  # does not raise
    assert sidecar.snapshot().t_s == clock.t_s  # a fresh snapshot is still published
    record = sidecar.lookup("req-1")
    assert record is not None and record["request_id"] == "req-1"
    assert sidecar.lookup("nope") is None
    assert not sidecar.ready()[0]


def test_a_failed_read_is_counted_and_the_sidecar_keeps_polling(
    clock: FakeClock, make_sidecar: Callable[[ScriptedMeter], Sidecar]
) -> None:
    meter = ScriptedMeter(clock, fail=lambda n: MeterReadError("timeout") if n % 4 == 0 else None)
    sidecar = make_sidecar(meter)
    poll_for(sidecar, clock, 2.0)  # 100 reads, every 4th fails
    assert sidecar.meter_errors == 25
    assert sidecar.lost is None
    assert sidecar.timeline.polls == 75
    assert sidecar.ready()[0]
    sidecar.tick()
    assert sidecar.snapshot().devices[0].energy_j > 0


def test_a_failed_status_read_is_counted_and_keeps_the_last_status(
    clock: FakeClock, make_sidecar: Callable[[ScriptedMeter], Sidecar]
) -> None:
    meter = ScriptedMeter(clock)
    sidecar = make_sidecar(meter)
    poll_for(sidecar, clock, POLL_S)  # the first poll reads the status too
    meter.status_error = MeterReadError("busy")
    poll_for(sidecar, clock, sidecar.config.status_interval_s + POLL_S)  # the status is due again
    assert meter.status_reads == 2
    assert sidecar.meter_errors == 1
    assert sidecar.status == (DeviceStatus(device_id="GPU-fake", power_w=500.0),)
    assert sidecar.lost is None


def test_a_counter_reset_is_counted_in_the_snapshot(
    clock: FakeClock, make_sidecar: Callable[[ScriptedMeter], Sidecar]
) -> None:
    meter = ScriptedMeter(clock)
    sidecar = make_sidecar(meter)
    poll_for(sidecar, clock, 0.5)
    meter.reset_counter()
    poll_for(sidecar, clock, 0.5)
    sidecar.tick()
    assert sidecar.snapshot().stats.counter_resets == 1


# jouletrace_counter_resets_total is documented as "resets and wraps handled".
def test_a_counter_wrap_is_counted_in_the_snapshot_like_a_reset(
    clock: FakeClock, make_sidecar: Callable[[ScriptedMeter], Sidecar]
) -> None:
    meter = ScriptedMeter(clock, wrap_j=5100.0)  # 5000 J + 10 J per 100 ms wraps after 1 s
    sidecar = make_sidecar(meter)
    poll_for(sidecar, clock, 2.0)
    assert sidecar.timeline.wraps == 1
    sidecar.tick()
    assert sidecar.snapshot().stats.counter_resets == 1


def test_a_read_no_device_makes_is_a_meter_event_and_adds_no_energy(
    clock: FakeClock, make_sidecar: Callable[[ScriptedMeter], Sidecar]
) -> None:
    meter = ScriptedMeter(clock)
    sidecar = make_sidecar(meter)
    poll_for(sidecar, clock, 0.5)
    good = ScriptedMeter.read
    meter.read = lambda: Reading(clock(), ((2**64 - 1) / 1000.0,))  # type: ignore[method-assign]
    poll_for(sidecar, clock, 0.02)
    meter.read = lambda: good(meter)  # type: ignore[method-assign]
    poll_for(sidecar, clock, 0.5)
    sidecar.tick()
    snap = sidecar.snapshot()
    assert snap.stats.taps.events[("meter", "implausible_reads")] == 1
    assert snap.stats.measured_j < 200.0  # 10 J a 100 ms, not the spike's 1.8e16 J
    assert snap.stats.counter_resets == 0


def test_late_reads_are_a_meter_event_in_the_snapshot(
    clock: FakeClock, make_sidecar: Callable[[ScriptedMeter], Sidecar]
) -> None:
    sidecar = make_sidecar(ScriptedMeter(clock))
    sidecar.poller.late_reads = 3  # as the polling thread counts them (tests/sidecar/test_poller.py)
    sidecar.tick()
    assert sidecar.snapshot().stats.taps.events[("meter", "late_reads")] == 3


def test_model_names_beyond_the_knob_are_summed_as_other_and_counted_in_the_snapshot(
    clock: FakeClock,
) -> None:
    sidecar = Sidecar(
        SidecarConfig(meter="sim", settle_s=0.5, split="tokens", max_model_labels=2),
        ScriptedMeter(clock),
        clock=clock,
    )
    try:
        t_start = clock.t_s
        for k in range(6):
            rid = f"req-{k}"
            sidecar.add_request(
                RequestInfo(rid, model=f"model-{k}", start_s=t_start, end_s=t_start + 0.4, output_tokens=5)
            )
            sidecar.add_work(WorkEvent(rid, t_start + 0.1, t_start + 0.3, Phase.DECODE, 10.0))
        poll_for(sidecar, clock, 2.0)
        snap = sidecar.snapshot()
        assert {m for m, _ in snap.phase_energy_j} == {
            "unknown",
            "model-0",
            "other",
        }  # cap 2: "unknown" reserved
        assert "other" in {m for m, _ in snap.output_units}
        assert snap.stats.taps.events[("attribution", "labels_folded")] > 0
        sidecar.tick()  # a fresh snapshot: the records went to the per-request series in the last tick
        assert (
            sidecar.snapshot().stats.taps.events[("metrics", "labels_folded")] == 5
        )  # model-1 .. 5 ("unknown", the served model, and model-0 named)
        record = sidecar.lookup("req-5")
        assert record is not None and record["model"] == "model-5"  # the record keeps its name
    finally:
        sidecar.close()


def test_the_tick_deletes_ledger_records_past_their_age_with_no_traffic(clock: FakeClock) -> None:
    wall = [2_000_000.0]
    ledger = Ledger(":memory:", max_age_s=600.0, clock=lambda: wall[0])
    ledger.put_many([make_record(request_id="old")])
    sidecar = Sidecar(SidecarConfig(meter="sim"), ScriptedMeter(clock), clock=clock, ledger=ledger)
    try:
        sidecar.tick()
        assert ledger.get("old") is not None
        wall[0] += 700.0  # no request since: nothing is written
        sidecar.tick()
        assert ledger.get("old") is None and ledger.count() == 0
    finally:
        sidecar.close()


def test_a_ledger_held_by_another_connection_fails_no_tick_and_keeps_the_sidecar_ready(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Adversarial probe: with a backup holding the ledger, saving the idle floor (every 60 s) raised
    inside the tick: every tick failed, /readyz went 503 after three, late tasks and retention were
    skipped, and no write error was counted."""
    import sqlite3
    from dataclasses import replace

    from sidecar.sim.run import SimConfig, simulate
    from tests.sidecar.test_app import simulated

    base = SimConfig()
    run = simulate(replace(base, workload=replace(base.workload, n_requests=8, start_s=1.0)), seed=3)
    path = tmp_path / "l.db"
    ledger = Ledger(str(path), write_every_s=1.0)
    clock = FakeClock(0.0)
    sc = simulated(run, clock, ledger)

    def step(n: int) -> None:
        for i in range(n):
            clock.advance(0.02)
            sc.poller.read_once()
            if i % 5 == 4:
                sc._tick_job()

    step(int((run.duration_s + 2.0) / 0.02))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    clock.advance(61.0)  # the floor is due to be saved again
    step(20)
    other.execute("COMMIT")
    other.close()
    assert sc.tick_failures == 0 and sc.ready()[0] and ledger.counts["write_errors"] >= 1
    ledger.close()


def test_ledger_writes_that_keep_failing_make_the_sidecar_unready_until_one_goes_through(
    clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adversarial probe: with the ledger file damaged every write failed (``ledger/write_errors``
    climbed, the records piled up in memory, the oldest dropped) and /readyz stayed ready: only the
    tick job's failures made it unready."""
    wall = [2_000_000.0]
    ledger = Ledger(tmp_path / "l.db", clock=lambda: wall[0])
    sidecar = Sidecar(SidecarConfig(meter="sim"), ScriptedMeter(clock), clock=clock, ledger=ledger)
    try:
        poll_for(sidecar, clock, 1.0)
        write = ledger._write

        def damaged(batch: object) -> int:
            raise sqlite3.DatabaseError("file is not a database")

        monkeypatch.setattr(ledger, "_write", damaged)
        ledger.put_many([make_record(request_id="r")])  # the first failure
        for _ in range(9):  # the records kept back are tried again every second, at the tick
            wall[0] += RETRY_EVERY_S
            sidecar.tick()
        assert sidecar.ready()[0]  # 9 s: a lock held for a while (a backup) keeps it ready
        wall[0] += RETRY_EVERY_S
        sidecar.tick()
        assert sidecar.ready() == (False, "ledger writes failed for 10 s in a row (see the log)")
        assert ledger.counts["write_errors"] == 11
        monkeypatch.setattr(ledger, "_write", write)  # repaired: the next try goes through
        wall[0] += RETRY_EVERY_S
        sidecar.tick()
        assert sidecar.ready()[0] and ledger.count() == 1
    finally:
        sidecar.close()
