"""Ledger faults: a record SQLite refuses costs only itself; a full disk keeps records and resumes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sidecar.attribution.record_batch import REQUEST_ID
from sidecar.export.store import RETRY_EVERY_S, Ledger
from tests.sidecar.export.factories import make_record


def test_a_record_that_cannot_be_stored_is_skipped_and_counted_and_its_batch_is_kept() -> None:
    with Ledger(":memory:") as led:
        good = [make_record(request_id=f"ok-{i}") for i in range(20)]
        poison = make_record(request_id="poison", output_tokens=10**30)  # "Python int too large" for SQLite
        assert led.put_many([*good[:10], poison, *good[10:]]) == 20
        assert led.count() == 20 and led.get("poison") is None
        assert all(led.get(f"ok-{i}") is not None for i in range(20))
        assert (led.counts["unstorable"], led.counts["stored"]) == (1, 20)
        assert led.put_many([make_record(request_id="later")]) == 1  # the ledger goes on


def test_an_unstorable_record_whose_id_is_not_text_is_counted_like_any_other() -> None:
    # the warning that names the skipped record once failed on an id it could not slice,
    # and the whole batch was lost with it
    with Ledger(":memory:") as led:
        poison = make_record(request_id=10**30)  # type: ignore[arg-type]
        assert led.put_many([make_record(request_id="ok-1"), poison, make_record(request_id="ok-2")]) == 2
        assert led.counts["unstorable"] == 1
        assert led.get("ok-1") is not None and led.get("ok-2") is not None


def test_nan_where_a_column_cannot_be_null_is_unstorable_not_counted_as_stored() -> None:
    # INSERT OR IGNORE skipped such a row without a word: it was counted stored and never there
    with Ledger(":memory:") as led:
        for field in ("energy_j", "busy_s", "output_units"):
            poison = make_record(request_id=f"nan-{field}", **{field: float("nan")})
            assert led.put_many([make_record(request_id=f"ok-{field}"), poison]) == 1
            assert led.get(f"nan-{field}") is None and led.get(f"ok-{field}") is not None
        assert (led.counts["unstorable"], led.counts["stored"], led.count()) == (3, 3, 3)


def _fill_up(led: Ledger) -> None:
    """SQLite's own page limit: writes then fail with SQLITE_FULL, as on a full disk."""
    pages = led._conn.execute("PRAGMA page_count").fetchone()[0]
    led._conn.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_keeps_serving_counts_and_writes_the_records_once_there_is_room(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as led:
        led.put_many([make_record(request_id="before")])
        _fill_up(led)
        big = {"trace_id": "x" * 50_000}  # more than the pages left
        assert led.put_many([make_record(request_id=f"full-{i}", attributes=big) for i in range(5)]) == 0
        assert led.counts["write_errors"] == 1
        assert led.get("full-3") is not None and led.get("before") is not None  # still served, from memory
        led._conn.execute("PRAGMA max_page_count = 1073741823")  # room again
        assert led.put_many([make_record(request_id="after")]) == 6
        assert led.count() == 7 and led.get("full-3") is not None


def test_records_kept_while_the_disk_is_full_are_bounded(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db", max_pending=3) as led:
        led.put_many([make_record(request_id="first")])
        _fill_up(led)
        big = {"trace_id": "x" * 50_000}
        for i in range(5):
            led.put_many([make_record(request_id=f"r{i}", attributes=big)])
        assert led.counts["dropped"] == 2 and led.get("r0") is None and led.get("r4") is not None


def test_the_sidecar_keeps_ticking_on_a_full_ledger_and_exports_its_counters(tmp_path: Path) -> None:
    import math
    from dataclasses import replace

    from prometheus_client.parser import text_string_to_metric_families

    from sidecar.app import Sidecar
    from sidecar.config import SidecarConfig
    from sidecar.sim.meter import SimFeeder, SimMeter
    from sidecar.sim.run import MODEL_NAME, SimConfig, simulate
    from sidecar.taps.tap import SourceTap

    base = SimConfig()
    run = simulate(replace(base, workload=replace(base.workload, n_requests=20, start_s=1.0)), seed=3)
    now = [0.0]
    config = SidecarConfig(meter="sim", model=MODEL_NAME, settle_s=0.5, fit_warmup_ticks=20)
    led = Ledger(tmp_path / "ledger.db")
    sidecar = Sidecar(
        config,
        SimMeter(run, clock=lambda: now[0], t0=0.0),
        taps=[SourceTap(SimFeeder(run, 0.0))],
        clock=lambda: now[0],
        ledger=led,
    )
    _fill_up(led)
    while now[0] < run.duration_s + 2.0:
        now[0] += 0.02
        sidecar.poller.read_once()
        if round(now[0] / 0.02) % 5 == 0:
            sidecar.tick()
    sidecar.tick(seal_until_s=math.inf)
    assert led.counts["write_errors"] >= 1
    assert all(sidecar.lookup(r.request_id) is not None for r in run.requests)  # served from memory
    text = sidecar.exporter.render().decode()
    outcomes = {
        s.labels["outcome"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "jouletrace_tap_events_total" and s.labels.get("jouletrace_tap") == "ledger"
    }
    assert "write_errors" in outcomes
    led._conn.execute("PRAGMA max_page_count = 1073741823")
    sidecar.tick(seal_until_s=math.inf)  # nothing new is final: the stop's tick writes the kept records
    assert led.count() == len(run.requests) and not led._pending


def test_kept_records_are_written_with_no_batch_to_carry_them_at_most_every_second(tmp_path: Path) -> None:
    """A failed write's records used to wait for the next batch: with no more traffic, a stop lost them."""
    now = [1000.0]
    with Ledger(tmp_path / "ledger.db", clock=lambda: now[0]) as led:
        led.put_many([make_record(request_id="before")])
        _fill_up(led)
        big = {"trace_id": "x" * 50_000}
        assert led.put_many([make_record(request_id=f"kept-{i}", attributes=big) for i in range(3)]) == 0
        led._conn.execute("PRAGMA max_page_count = 1073741823")  # room again
        now[0] += RETRY_EVERY_S / 2
        assert led.flush() == 0 and led.count() == 1  # tried less than a second ago: not yet
        assert led.flush(force=True) == 3 and led.count() == 4  # the stop: now
        assert led.flush(force=True) == 0 and led.counts["write_errors"] == 1


def test_a_record_whose_energy_is_unknown_never_replaces_a_stored_one_and_is_counted() -> None:
    """A sidecar restarted after a request was stored sees its retried span without its work:
    that 0 J ``energy_unknown`` record must not overwrite the measured one."""
    with Ledger(":memory:") as led:
        led.put_many([make_record(request_id="x", energy_j=40.0)])
        lost = make_record(request_id="x", energy_j=0.0, attributes={"energy_unknown": "true"})
        assert led.put_many([lost]) == 0
        assert led.get("x")["energy_j"] == 40.0 and led.counts["duplicate_kept"] == 1  # type: ignore[index]
        assert led.put_many([make_record(request_id="x", energy_j=41.0)]) == 0  # nor a known one: final
        assert led.get("x")["energy_j"] == 40.0 and led.count() == 1  # type: ignore[index]
        assert led.counts["duplicate_kept"] == 2
        assert led.put_many(
            [make_record(request_id="new", energy_j=0.0, attributes={"energy_unknown": "true"})]
        )


def test_a_late_task_reaches_a_record_kept_in_memory_while_the_disk_is_full(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as led:
        _fill_up(led)
        big = {"trace_id": "x" * 50_000}
        assert led.put_many([make_record(request_id="full", task="unknown", attributes=big)]) == 0
        assert led.set_tasks({"full": "code"}) == 1
        got = led.get("full")
        assert got is not None and got["task"] == "code"


def test_a_damaged_file_counts_its_write_errors_and_keeps_a_bounded_batch(tmp_path: Path) -> None:
    """A ledger whose id index has a page overwritten (a disk fault, a torn copy) opens fine but
    every write raises "database disk image is malformed", not an OperationalError: that is a
    write error too, and the records kept for the retry stay within ``max_pending`` (they grew
    by every tick's finals, each tick writing all of them again)."""
    path = tmp_path / "ledger.db"
    with Ledger(path) as led:
        led.put_many([make_record(request_id=f"a{i}") for i in range(3000)])
        root = led._conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_requests_1'"
        ).fetchone()[0]
        page = led._conn.execute("PRAGMA page_size").fetchone()[0]
        led._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(path, "r+b") as f:
        f.seek((root - 1) * page)
        f.write(b"\xff" * page)
    with Ledger(path, max_pending=50) as led:
        for tick in range(10):
            assert led.put_many([make_record(request_id=f"t{tick}-{i}") for i in range(20)]) == 0
        assert led.counts["write_errors"] == 10 and len(led._pending) == 50
        assert led.counts["dropped"] == 150
        assert led.get("t9-19") is not None  # the newest still served, from memory


def test_a_failed_retention_by_age_is_rolled_back_and_the_count_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Retention deletes, then the transaction fails (locked, I/O): the deletion is undone, and
    so must be the rows it had counted off, or the max_rows cap would work from a wrong count."""
    now = [1_000_000.0]
    with Ledger(":memory:", max_age_s=60.0, clock=lambda: now[0]) as led:
        led.put_many([make_record(request_id=f"r{k}") for k in range(4)])
        real_retain = led._retain

        def retain_then_fail(cur: sqlite3.Cursor, at: float) -> None:
            real_retain(cur, at)
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(led, "_retain", retain_then_fail)
        now[0] += 120.0
        assert led.expire() == 0 and led.counts["write_errors"] == 1
        assert led.count() == 4 and led._rows == 4


def test_a_write_while_another_connection_holds_the_lock_keeps_its_records_for_the_next(
    tmp_path: Path,
) -> None:
    """A backup or an operator's shell holding the file: the write gives up after BUSY_TIMEOUT_S (the
    tick waits on the event loop meanwhile; it waited 5 s), keeps the records, writes them later."""
    path = tmp_path / "ledger.db"
    with Ledger(str(path)) as led:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        assert led.put_many([make_record(request_id=f"r{i}") for i in range(3)]) == 0
        assert led.counts["write_errors"] == 1 and led.get("r1") is not None  # served from memory
        other.execute("COMMIT")
        other.close()
        assert led.flush(force=True) == 3 and led.count() == 3


def test_a_stored_id_sent_again_while_the_file_is_locked_is_kept_out_not_handed_back_to_count(
    tmp_path: Path,
) -> None:
    """Adversarial probe: a failed write handed its whole batch back to be counted, one whose id was
    stored before a restart too: the request-energy histogram counted it twice."""
    path = tmp_path / "ledger.db"
    with Ledger(str(path)) as led:
        led.put_new([make_record(request_id="X")], force=True)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        counted = led.put_new([make_record(request_id="X"), make_record(request_id="Y")], force=True)
        assert [v[0] for v in counted.values] == ["Y"] and led.counts["write_errors"] == 1
        other.execute("COMMIT")
        other.close()
        assert led.flush(force=True) == 1 and led.counts["duplicate_kept"] == 1 and led.count() == 2


def test_a_state_the_locked_file_refuses_is_counted_and_said_not_raised(tmp_path: Path) -> None:
    """Adversarial probe: saving the idle floor raised inside the tick while a backup held the file:
    every tick failed and the sidecar turned unready."""
    path = tmp_path / "ledger.db"
    with Ledger(str(path)) as led:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        assert not led.save_state("k", {"a": 1}) and led.counts["write_errors"] == 1
        other.execute("COMMIT")
        other.close()
        assert led.save_state("k", {"a": 1}) and led.load_state("k") == {"a": 1}


def test_writes_failing_in_a_row_are_timed_from_the_first_until_one_goes_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What makes the sidecar unready (``Sidecar.ready``): a run of failed writes ends with one that
    goes through, or with one that kept nothing back (all stored already: no retry would end it)."""
    now = [1000.0]
    with Ledger(tmp_path / "ledger.db", clock=lambda: now[0]) as led:
        write, stored_of = led._write, led._stored_of

        def damaged(batch: object) -> int:
            raise sqlite3.DatabaseError("file is not a database")

        monkeypatch.setattr(led, "_write", damaged)
        for i in range(3):
            led.put_many([make_record(request_id=f"r{i}")])
            assert led.failing_s() == 2.0 * i
            now[0] += 2.0
        monkeypatch.setattr(led, "_stored_of", lambda batch: [rec[REQUEST_ID] for rec in batch])  # all stored
        led.put_many([make_record(request_id="again")])
        assert led.failing_s() == 0.0 and led.waiting == 0
        monkeypatch.setattr(led, "_stored_of", stored_of)
        led.put_many([make_record(request_id="r3")])
        now[0] += 1.0
        assert led.failing_s() == 1.0  # a new run
        monkeypatch.setattr(led, "_write", write)
        assert led.flush() == 1 and led.failing_s() == 0.0
