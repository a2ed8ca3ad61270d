"""The idle floor survives a restart through the ledger."""

from __future__ import annotations

import pytest

from sidecar.attribution.floor import FloorEstimate
from sidecar.export.floor_state import FloorKeeper
from sidecar.export.store import Ledger


def test_a_restarted_sidecar_restores_the_floor_its_predecessor_measured(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "ledger.db"
    first = FloorEstimate("GPU-0")
    for k in range(30):
        first.observe_idle(0.1 * (k + 1), 0.1, 8.0)  # 80 W
    with Ledger(path, clock=lambda: 5_000.0) as ledger:
        assert FloorKeeper(first, ledger, wall=lambda: 5_000.0).save(3.0, force=True)
    second = FloorEstimate("GPU-0")
    with Ledger(path, clock=lambda: 5_600.0) as ledger:
        assert FloorKeeper(second, ledger, wall=lambda: 5_600.0).restore(now_s=1.0)
    reading = second.reading(1.0)
    assert reading.source == "restored"
    assert reading.power_w == pytest.approx(80.0)
    assert reading.age_s == pytest.approx(600.0, abs=1.0)


def test_a_floor_saved_for_other_devices_or_garbled_is_not_restored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Ledger(tmp_path / "l.db") as ledger:
        ledger.save_state(
            "idle_floor", {"devices": "GPU-9", "power_w": 80.0, "observed_unix_s": 1.0, "samples": 3}
        )
        assert not FloorKeeper(FloorEstimate("GPU-0"), ledger).restore(0.0)
        ledger.save_state("idle_floor", {"devices": "GPU-0", "power_w": "hot"})
        assert not FloorKeeper(FloorEstimate("GPU-0"), ledger).restore(0.0)


def test_saving_is_rate_limited_and_needs_a_measurement(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Ledger(tmp_path / "l.db") as ledger:
        floor = FloorEstimate("GPU-0")
        keeper = FloorKeeper(floor, ledger, every_s=60.0)
        assert not keeper.save(0.0)  # nothing measured yet
        floor.observe_idle(1.0, 0.1, 7.5)
        assert keeper.save(1.0)
        assert not keeper.save(30.0)
        assert keeper.save(62.0)


def test_a_save_the_ledger_refuses_is_tried_again_after_retry_s_not_every_tick(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    from sidecar.export.floor_state import RETRY_S

    path = tmp_path / "l.db"
    floor = FloorEstimate("GPU-0")
    for k in range(30):
        floor.observe_idle(0.1 * (k + 1), 0.1, 8.0)
    with Ledger(path) as ledger:
        keeper = FloorKeeper(floor, ledger)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        assert not keeper.save(10.0) and keeper.failed and ledger.counts["write_errors"] == 1
        assert not keeper.save(10.0 + RETRY_S / 2) and ledger.counts["write_errors"] == 1  # not tried
        other.execute("COMMIT")
        other.close()
        assert keeper.save(10.0 + RETRY_S) and not keeper.failed
