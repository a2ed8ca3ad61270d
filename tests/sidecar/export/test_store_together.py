"""Final records written together (``write_every_s``): they wait in memory and are served meanwhile,
are written (and handed back to be counted) when due, at the stop and at close; a stored id is kept
out when they are written, before they are counted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sidecar.export import ledger_write
from sidecar.export.store import Ledger
from tests.sidecar.export.factories import make_record


def _file_ids(path: Path) -> set[str]:
    """The ids in the ledger's file, read by another connection (what a crash would leave)."""
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT request_id FROM requests")}


def _ids(batch: object) -> list[str]:
    return [r.request_id for r in batch]  # type: ignore[attr-defined]


def test_records_wait_are_served_and_are_written_and_handed_back_once_due(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path, write_every_s=1.0) as led:
        assert _ids(led.put_new([make_record(request_id="first")], now_s=10.0)) == ["first"]  # at once
        assert _file_ids(path) == {"first"}
        assert _ids(led.put_new([make_record(request_id="a")], now_s=10.4)) == []  # waits
        assert _ids(led.put_new([make_record(request_id="b")], now_s=10.8)) == []
        assert _file_ids(path) == {"first"} and led.count() == 1  # not in the file yet
        assert led.get("b") is not None and led.get("b")["final"] is True  # type: ignore[index]
        assert [r["request_id"] for r in led.recent(2)] == ["b", "a"]  # the waiting ones are the newest
        assert [r["request_id"] for r in led.recent(5)] == ["b", "a", "first"]
        assert _ids(led.put_new([], now_s=10.9)) == []  # a tick with no finals: still waiting
        assert _ids(led.put_new([], now_s=11.0)) == ["a", "b"]  # a second since the last write
        assert _file_ids(path) == {"first", "a", "b"} and led.counts["stored"] == 3
        assert _ids(led.put_new([], now_s=20.0)) == []  # nothing waits: no write


def test_the_stop_writes_what_waits_and_so_does_close(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    led = Ledger(path, write_every_s=3600.0)
    led.put_new([make_record(request_id="first")], now_s=0.0)
    led.put_new([make_record(request_id="a")], now_s=1.0)
    assert _ids(led.put_new([make_record(request_id="b")], now_s=2.0, force=True)) == ["a", "b"]
    led.put_new([make_record(request_id="flushed")], now_s=3.0)
    assert led.flush(force=True) == 1  # the stop after a failed seal: stored (not handed back)
    led.put_new([make_record(request_id="closed")], now_s=4.0)
    led.close()
    assert _file_ids(path) == {"first", "a", "b", "flushed", "closed"}
    led.close()  # idempotent: nothing waits, nothing raised


def test_a_stored_id_is_kept_out_before_it_is_handed_back_and_a_waiting_one_at_once(tmp_path: Path) -> None:
    """A restarted sidecar's record of a request stored before the restart is not counted again."""
    with Ledger(tmp_path / "ledger.db", write_every_s=1.0) as led:
        led.put_new([make_record(request_id="stored", energy_j=40.0)], now_s=0.0)
        led.put_new([make_record(request_id="waiting", energy_j=30.0)], now_s=0.1)
        led.put_new([make_record(request_id="stored", energy_j=0.0)], now_s=0.2)
        led.put_new([make_record(request_id="waiting", energy_j=0.0)], now_s=0.3)
        assert led.counts["duplicate_kept"] == 1  # the waiting id: kept out as it came
        assert _ids(led.put_new([make_record(request_id="new")], now_s=1.0)) == ["waiting", "new"]
        assert led.kept_out == ["stored"] and led.counts["duplicate_kept"] == 2
        assert led.get("stored")["energy_j"] == 40.0 and led.get("waiting")["energy_j"] == 30.0  # type: ignore[index]


def test_a_write_is_due_once_write_rows_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_write, "WRITE_ROWS", 3)
    path = tmp_path / "ledger.db"
    with Ledger(path, write_every_s=3600.0) as led:
        led.put_new([make_record(request_id="first")], now_s=0.0)
        assert _ids(led.put_new([make_record(request_id=f"r-{i}") for i in range(2)], now_s=1.0)) == []
        assert _ids(led.put_new([make_record(request_id="r-2")], now_s=2.0)) == ["r-0", "r-1", "r-2"]
        assert len(_file_ids(path)) == 4


def test_a_record_that_is_not_final_is_refused_and_none_of_its_batch_waits(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db", write_every_s=1.0) as led:
        with pytest.raises(ValueError, match="final records only"):
            led.put_new([make_record(request_id="ok"), make_record(request_id="open", final=False)])
        assert led.get("ok") is None


def test_an_unstorable_record_waits_with_the_others_and_costs_only_itself(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db", write_every_s=1.0) as led:
        led.put_new([make_record(request_id="first")], now_s=0.0)
        poison = make_record(request_id="poison", output_tokens=10**30)  # too large for SQLite
        led.put_new([make_record(request_id="ok-1"), poison, make_record(request_id="ok-2")], now_s=0.5)
        written = led.put_new([], now_s=1.0)
        assert _ids(written) == ["ok-1", "poison", "ok-2"]  # counted as at once: only a stored id is kept out
        assert led.counts["unstorable"] == 1 and led.counts["stored"] == 3
        assert led.get("ok-2") is not None and led.get("poison") is None


def test_a_late_task_names_a_waiting_record(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db", write_every_s=1.0) as led:
        led.put_new([make_record(request_id="first")], now_s=0.0)
        led.put_new([make_record(request_id="late", task="unknown")], now_s=0.5)
        assert led.set_tasks({"late": "chat"}) == 1
        (written,) = led.put_new([], now_s=1.0)
        assert written.task == "chat" and led.get("late")["task"] == "chat"  # type: ignore[index]


def test_a_stored_record_is_served_over_one_waiting_under_its_id(tmp_path: Path) -> None:
    """A span sent again to a restarted sidecar makes a 0 J record of a request stored measured: while
    it waits to be written (and kept out), the API still answers with the stored record."""
    path = tmp_path / "ledger.db"
    with Ledger(path) as before_restart:
        before_restart.put_new([make_record(request_id="x", energy_j=40.0)])
    with Ledger(path, write_every_s=1.0) as led:
        led.put_new([make_record(request_id="fresh")], now_s=0.0)
        again = make_record(request_id="x", energy_j=0.0, attributes={"energy_unknown": "true"})
        assert _ids(led.put_new([again], now_s=0.5)) == []  # waits
        assert led.get("x")["energy_j"] == 40.0  # type: ignore[index]
        assert _ids(led.put_new([], now_s=1.0)) == [] and led.kept_out == ["x"]
        assert led.get("x")["energy_j"] == 40.0 and led.counts["duplicate_kept"] == 1  # type: ignore[index]


def test_recent_does_not_list_a_record_waiting_under_a_stored_id(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path) as before_restart:
        before_restart.put_new([make_record(request_id="x", energy_j=40.0)])
    with Ledger(path, write_every_s=1.0) as led:
        led.put_new([make_record(request_id="fresh")], now_s=0.0)
        led.put_new([make_record(request_id="x", energy_j=0.0), make_record(request_id="y")], now_s=0.5)
        listed = [(r["request_id"], r["energy_j"]) for r in led.recent(10)]
        assert listed == [("y", 12.5), ("fresh", 12.5), ("x", 40.0)]


def test_a_record_kept_by_a_failed_write_keeps_a_later_one_of_its_id_out(tmp_path: Path) -> None:
    """Counted when its write failed, it must not be replaced (and counted again) by a later one."""
    path = tmp_path / "ledger.db"
    with Ledger(path, write_every_s=1.0) as led:
        led.put_new([make_record(request_id="first")], now_s=0.0)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another connection holds the file: the next write fails
        led.put_new([make_record(request_id="x", energy_j=40.0)], now_s=0.5)
        assert _ids(led.put_new([], now_s=1.0)) == ["x"] and led.counts["write_errors"] == 1
        holder.execute("ROLLBACK")
        holder.close()
        led.put_new([make_record(request_id="x", energy_j=0.0)], now_s=1.5)
        assert _ids(led.put_new([], now_s=2.0)) == [] and led.counts["duplicate_kept"] == 1
        assert led.flush(force=True) == 1 and led.get("x")["energy_j"] == 40.0  # type: ignore[index]
