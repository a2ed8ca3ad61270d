"""The sidecar's lifecycle on a fake clock: a failing tick job, a snapshot built when read, a stop that seals.

Uses the scripted fake meter of ``test_app_faults`` (an NVIDIA GPU cannot run here);
the real process is stopped with SIGTERM in ``test_shutdown_process``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from sidecar import app as app_module
from sidecar import shutdown
from sidecar.app import Sidecar
from sidecar.attribution.events import Phase, RequestInfo, StepBatch, WorkEvent
from sidecar.attribution.records import TapReport
from sidecar.cli_sidecar import start_watchdog
from sidecar.config import SidecarConfig
from sidecar.export.store import Ledger
from tests.sidecar.test_app_faults import ScriptedMeter, poll_for
from tests.support import FakeClock


def _raise_overflow(*args: object, **kwargs: object) -> None:
    raise OverflowError("a poison value")


class ScriptedTap:
    """A tap that raises from ``due`` while ``broken``, else hands out what it was given."""

    knob = ""

    def __init__(self) -> None:
        self.broken = False
        self.events: list[WorkEvent | StepBatch] = []
        self.infos: list[RequestInfo] = []
        self.stopped = False

    def start(self) -> int:
        return 0

    def stop(self, grace_s: float = 1.0) -> None:
        self.stopped = True

    def due(self, now_s: float) -> tuple[Sequence[WorkEvent | StepBatch], Sequence[RequestInfo]]:
        if self.broken:
            raise OverflowError("a poison value")
        out = (self.events, self.infos)
        self.events, self.infos = [], []
        return out

    def stats(self) -> TapReport:
        return TapReport()


def test_a_tick_job_that_keeps_failing_is_counted_and_makes_readyz_unready_until_it_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock(100.0)
    tap = ScriptedTap()
    sidecar = Sidecar(SidecarConfig(meter="sim", settle_s=0.5), ScriptedMeter(clock), taps=[tap], clock=clock)
    try:
        poll_for(sidecar, clock, 1.0)
        assert sidecar.ready()[0]
        advance = sidecar.attributor.advance

        monkeypatch.setattr(sidecar.attributor, "advance", _raise_overflow)
        for _ in range(3):
            with pytest.raises(OverflowError):
                sidecar._tick_job()
        ok, reason = sidecar.ready()
        assert not ok and "failed 3 times in a row" in reason
        assert 'jouletrace_job_failures_total{job="tick"' in sidecar.exporter.render().decode()
        monkeypatch.setattr(sidecar.attributor, "advance", advance)
        sidecar._tick_job()
        assert sidecar.ready()[0] and sidecar.tick_failures == 3
        text = sidecar.exporter.render().decode()
        assert any(
            line.startswith("jouletrace_job_failures_total{") and line.endswith(" 3.0")
            for line in text.splitlines()
        )
    finally:
        sidecar.close()


def test_a_tap_that_raises_costs_only_its_own_work_and_is_counted() -> None:
    """A tap whose due raised failed the whole tick: the other taps' work drained in it was lost
    and no record became final while it kept raising (one poison datagram a tick)."""
    clock = FakeClock(100.0)
    bad, good = ScriptedTap(), ScriptedTap()
    config = SidecarConfig(meter="sim", settle_s=0.5, split="tokens")
    sidecar = Sidecar(config, ScriptedMeter(clock), taps=[bad, good], clock=clock)
    try:
        poll_for(sidecar, clock, 1.0)  # t = 101
        bad.broken = True
        good.events = [WorkEvent("ok", 100.5, 100.9, Phase.DECODE, 8)]
        good.infos = [RequestInfo("ok", end_s=100.9, output_tokens=8)]
        for _ in range(20):
            sidecar._tick_job()  # does not raise
            poll_for(sidecar, clock, 0.1)
        assert sidecar.tick_failures == 0 and sidecar.ready()[0]
        record = sidecar.lookup("ok")
        assert record is not None and record["final"] and record["energy_j"] > 0
        assert sidecar.tap_failures["tap:ScriptedTap"] >= 20
        text = sidecar.exporter.render().decode()
        assert 'jouletrace_job_failures_total{job="tap:ScriptedTap"' in text
    finally:
        sidecar.close()


def _sidecar(clock: FakeClock, ledger_path: Path, tap: ScriptedTap) -> Sidecar:
    config = SidecarConfig(meter="sim", settle_s=30.0, split="tokens", shutdown_grace_s=5.0)
    return Sidecar(config, ScriptedMeter(clock), taps=[tap], clock=clock, ledger=Ledger(str(ledger_path)))


def done_and_open(sidecar: Sidecar, clock: FakeClock, tap: ScriptedTap) -> None:
    """A second of readings, then request ``done`` (ended at 100.6) and ``open`` (working to 102)."""
    poll_for(sidecar, clock, 1.0)  # t = 101
    tap.events = [
        WorkEvent("done", 100.2, 100.6, Phase.DECODE, 8),
        WorkEvent("open", 100.2, 102.0, Phase.DECODE, 8),
    ]
    tap.infos = [RequestInfo("done", end_s=100.6, output_tokens=8)]
    poll_for(sidecar, clock, 0.2)


def test_a_stop_seals_what_the_timeline_covers_and_stores_the_rest_as_provisional(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    tap = ScriptedTap()
    sidecar = _sidecar(clock, tmp_path / "ledger.db", tap)
    done_and_open(sidecar, clock, tap)
    assert sidecar.lookup("done")["final"] is False  # settle_s = 30: nothing sealed yet
    tap.infos = [RequestInfo("late_info", end_s=100.4, output_tokens=1)]  # still queued in the tap at stop
    tap.events = [WorkEvent("late_info", 100.2, 100.4, Phase.DECODE, 1)]
    sidecar.shutdown()
    assert tap.stopped
    ledger = sidecar.ledger
    done = ledger.get("done")
    assert done is not None and done["final"] and done["energy_j"] > 0
    assert ledger.get("late_info") is not None
    state = ledger.load_state("provisional")
    assert state is not None and [r["request_id"] for r in state["records"]] == ["open"]
    sidecar.close()

    open_j = state["records"][0]["energy_j"]
    tap = ScriptedTap()
    restarted = _sidecar(clock, tmp_path / "ledger.db", tap)
    try:
        seen = restarted.lookup("open")
        assert seen is not None and seen["final"] is False and seen["attributes"]["resumed"] == "true"
        assert seen["energy_j"] == pytest.approx(open_j) and restarted.resumed == 1
        kept = restarted.ledger.load_state("provisional")  # until the next stop: a crash loses nothing
        assert kept is not None and [r["request_id"] for r in kept["records"]] == ["open"]
        clock.t_s += 5.0  # the gap while no sidecar ran
        tap.events = [WorkEvent("open", 106.0, 106.5, Phase.DECODE, 8)]
        tap.infos = [RequestInfo("open", end_s=106.5, output_tokens=40)]
        poll_for(restarted, clock, 1.0)
        restarted.shutdown()
        final = restarted.ledger.get("open")
        assert final is not None and final["final"] and final["energy_j"] > open_j
        assert final["attributes"]["energy_unknown"] == "true"  # the stop's gap: a lower bound
        assert restarted.ledger.load_state("provisional")["records"] == []  # type: ignore[index]
    finally:
        restarted.close()


def test_a_crash_after_a_restart_loses_no_resumed_request_and_resumes_none_twice(tmp_path: Path) -> None:
    """The resumed sidecar dies (kill -9: no stop) before one of its resumed requests is final: the
    next start takes that one up again, not the one whose final record is in the ledger."""
    clock = FakeClock(100.0)
    tap = ScriptedTap()
    first = _sidecar(clock, tmp_path / "ledger.db", tap)
    poll_for(first, clock, 1.0)
    tap.events = [WorkEvent(rid, 100.2, 102.0, Phase.DECODE, 8) for rid in ("a", "b")]
    poll_for(first, clock, 0.2)
    first.shutdown()
    first.close()
    tap = ScriptedTap()
    second = _sidecar(clock, tmp_path / "ledger.db", tap)
    assert second.resumed == 2
    tap.infos = [RequestInfo("a", end_s=101.5, output_tokens=8)]
    poll_for(second, clock, 40.0)  # settle_s 30: "a" is final, "b" still open
    assert second.ledger.get("a")["final"] and second.ledger.get("b") is None  # type: ignore[index]
    second.close()  # no shutdown: the process died
    third = _sidecar(clock, tmp_path / "ledger.db", ScriptedTap())
    try:
        assert third.resumed == 1
        b = third.lookup("b")
        assert b is not None and b["final"] is False and b["energy_j"] > 0
    finally:
        third.close()


def test_run_stops_through_the_seal_when_stop_is_set(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    sidecar = _sidecar(clock, tmp_path / "ledger.db", ScriptedTap())

    async def main() -> None:
        stop = asyncio.Event()
        stop.set()
        await sidecar.run(stop, serve_http=False)

    try:
        asyncio.run(main())
        assert sidecar.ledger.load_state("provisional")["records"] == []  # type: ignore[index]
    finally:
        sidecar.close()


def test_the_stop_watchdog_exits_1_when_the_stop_overruns_and_can_be_cancelled() -> None:
    fired: list[int] = []
    timer = start_watchdog(0.05, fired.append)
    timer.join(2.0)
    assert fired == [1]
    quiet: list[int] = []
    start_watchdog(5.0, quiet.append).cancel()
    assert quiet == []


def test_the_snapshot_is_built_on_the_first_read_after_ticks_as_of_the_last_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock(100.0)
    tap = ScriptedTap()
    sidecar = Sidecar(SidecarConfig(meter="sim", settle_s=0.5), ScriptedMeter(clock), taps=[tap], clock=clock)
    built: list[float] = []
    real = app_module.build_snapshot
    monkeypatch.setattr(app_module, "build_snapshot", lambda side, t_s: built.append(t_s) or real(side, t_s))
    try:
        poll_for(sidecar, clock, 1.0)  # ten ticks, nobody reading: no snapshot built
        assert built == []
        first = sidecar.snapshot()
        assert built == [clock.t_s] and first.t_s == clock.t_s
        assert sidecar.snapshot() is first and len(built) == 1  # no tick since: the same one
        monkeypatch.setattr(sidecar.ledger, "put_new", _raise_overflow)
        with pytest.raises(OverflowError):  # a failing tick still moves the snapshot on: failures, lag
            sidecar._tick_job()
        failed = sidecar.snapshot()
        assert failed.stats.job_failures == {"tick": 1} and failed.t_s == clock.t_s
    finally:
        sidecar.close()


def test_a_snapshot_read_on_another_thread_waits_for_the_tick_in_progress() -> None:
    clock = FakeClock(100.0)
    tap = ScriptedTap()
    sidecar = Sidecar(SidecarConfig(meter="sim", settle_s=0.5), ScriptedMeter(clock), taps=[tap], clock=clock)
    inside, release = threading.Event(), threading.Event()
    seen: list[float] = []

    def slow_due(now_s: float) -> tuple[list[WorkEvent], list[RequestInfo]]:
        inside.set()
        release.wait(2.0)
        return [], []

    try:
        poll_for(sidecar, clock, 1.0)
        tap.due = slow_due  # type: ignore[method-assign]
        ticking = threading.Thread(target=sidecar.tick, args=(clock.t_s + 0.1,))
        ticking.start()
        assert inside.wait(2.0)
        reader = threading.Thread(target=lambda: seen.append(sidecar.snapshot().t_s))
        reader.start()
        reader.join(0.05)
        assert seen == []  # the tick holds the parts
        release.set()
        ticking.join(2.0)
        reader.join(2.0)
        assert seen == [clock.t_s + 0.1]
    finally:
        release.set()
        sidecar.close()


def test_a_stop_over_the_store_cap_keeps_the_requests_with_energy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of open requests that never worked must not push a working one out of the store."""
    monkeypatch.setattr(shutdown, "MAX_STORED", 3)
    clock = FakeClock(100.0)
    tap = ScriptedTap()
    sidecar = _sidecar(clock, tmp_path / "ledger.db", tap)
    try:
        poll_for(sidecar, clock, 1.0)
        tap.events = [WorkEvent("good", 100.2, 101.0, Phase.DECODE, 8)]
        poll_for(sidecar, clock, 0.2)
        tap.infos = [RequestInfo(f"junk{i}", start_s=101.1) for i in range(5)]
        poll_for(sidecar, clock, 0.2)
        sidecar.shutdown()
        state = sidecar.ledger.load_state("provisional")
        assert state is not None
        assert [r["request_id"] for r in state["records"]] == ["good", "junk3", "junk4"]
    finally:
        sidecar.close()
