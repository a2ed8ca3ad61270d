"""A stop while another connection holds the ledger (a backup during a rolling restart): the stop's
writes are tried again while the grace period lasts, so the final records, the open requests and
the idle floor are stored once it lets go; past the grace, the stop ends without raising."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from sidecar.app import Sidecar
from sidecar.export.store import Ledger
from sidecar.shutdown import seal_stop
from tests.sidecar.test_app_lifecycle import ScriptedTap, _sidecar, done_and_open
from tests.support import FakeClock


def _hold_write_lock(path: Path, for_s: float) -> threading.Thread:
    """Another connection takes the file's write lock now and lets go after ``for_s`` seconds."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")

    def release() -> None:
        time.sleep(for_s)
        conn.execute("ROLLBACK")
        conn.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def _stopping_sidecar(tmp_path: Path, clock: FakeClock) -> Sidecar:
    tap = ScriptedTap()
    sidecar = _sidecar(clock, tmp_path / "ledger.db", tap)
    sidecar.ledger.write_every_s = 1.0  # a final record waits to be written together at the stop
    done_and_open(sidecar, clock, tap)
    return sidecar


def test_a_stop_waits_out_a_lock_held_by_another_connection_and_stores_everything(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    sidecar = _stopping_sidecar(tmp_path, clock)
    holder = _hold_write_lock(tmp_path / "ledger.db", 1.5)
    t0 = time.monotonic()
    sidecar.shutdown()
    took_s = time.monotonic() - t0
    holder.join()
    sidecar.close()
    assert 1.5 <= took_s < 5.0  # waited for the lock, within shutdown_grace_s
    with Ledger(tmp_path / "ledger.db") as reopened:
        done = reopened.get("done")
        assert done is not None and done["final"] and done["energy_j"] > 0
        state = reopened.load_state("provisional")
        assert state is not None and [r["request_id"] for r in state["records"]] == ["open"]
        assert reopened.count() == 1


def test_a_lock_held_past_the_grace_period_ends_the_stop_in_time_without_raising(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    sidecar = _stopping_sidecar(tmp_path, clock)
    holder = _hold_write_lock(tmp_path / "ledger.db", 2.5)
    t0 = time.monotonic()
    seal_stop(sidecar, grace_s=1.0)
    took_s = time.monotonic() - t0
    assert took_s < 2.0  # the grace (1 s) and one write's busy wait (0.5 s)
    assert sidecar.ledger.get("done") is not None and sidecar.ledger.waiting == 1  # in memory still
    holder.join()
    sidecar.close()  # the lock is gone: close writes it
    with Ledger(tmp_path / "ledger.db") as reopened:
        assert reopened.get("done") is not None
