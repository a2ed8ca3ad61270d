"""The SQLite ledger: round trips, upserts, retention by rows and age, WAL, clear errors."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.errors import ConfigError
from sidecar.export.store import Ledger
from tests.sidecar.export.factories import make_record
from tests.support import FakeClock


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with Ledger(":memory:") as led:
        yield led


def test_put_then_get_returns_the_records_json_form(ledger: Ledger) -> None:
    rec = make_record()
    assert ledger.put_many([rec]) == 1
    assert ledger.get("req-0001") == rec.to_json()


def test_unknown_request_id_gets_none(ledger: Ledger) -> None:
    assert ledger.get("never-seen") is None


def test_put_of_a_known_id_keeps_the_stored_record_and_counts_the_newcomer(ledger: Ledger) -> None:
    """A final record is final: a second record for its id (a span sent again to a restarted
    sidecar, a datagram reusing the id) is kept out, counted, and named by put_new."""
    ledger.put_many([make_record(energy_j=1.0)])
    assert ledger.put_many([make_record(energy_j=2.0)]) == 0
    got = ledger.get("req-0001")
    assert got is not None and got["energy_j"] == 1.0
    assert ledger.count() == 1 and ledger.counts["duplicate_kept"] == 1
    fresh = ledger.put_new([make_record(energy_j=3.0), make_record(request_id="new")])
    assert [r.request_id for r in fresh] == ["new"] and ledger.counts["duplicate_kept"] == 2


def test_main_numbers_are_queryable_columns(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger(path) as led:
        led.put_many([make_record()])
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT energy_j, output_tokens, joules_per_output_unit, energy_source FROM requests"
        ).fetchone()
    assert row == (12.5, 250, 0.05, "measured")


def test_recent_lists_the_most_recently_stored_first(ledger: Ledger) -> None:
    ledger.put_many([make_record(request_id=f"r{i}") for i in range(5)])
    ledger.put_many([make_record(request_id="r1")])  # stored already: kept out, not moved
    ledger.put_many([make_record(request_id="r5")])
    assert [r["request_id"] for r in ledger.recent(3)] == ["r5", "r4", "r3"]


def test_a_batch_goes_in_by_id_but_keeps_its_order_of_storing(ledger: Ledger) -> None:
    ledger.put_many([make_record(request_id=f"r{i}") for i in (4, 2, 3, 0, 1)])
    assert [r["request_id"] for r in ledger.recent(5)] == ["r1", "r0", "r3", "r2", "r4"]


def test_a_batch_whose_ids_do_not_sort_is_stored_whole(ledger: Ledger) -> None:
    odd = make_record(request_id=7)  # type: ignore[arg-type]  # hostile: not text, yet storable
    assert ledger.put_many([make_record(request_id="b"), odd, make_record(request_id="a")]) == 3
    assert ledger.get("a") is not None and ledger.get("b") is not None and ledger.count() == 3


def test_retention_beyond_max_rows_takes_records_without_energy_first() -> None:
    """A flood of requests that never worked (evicted: 0 J, energy unknown) must not push the
    measured records out; among the rest, the oldest go first."""
    with Ledger(":memory:", max_rows=4) as led:
        led.put_many([make_record(request_id=f"measured{i}") for i in range(3)])
        unknown = {"energy_unknown": "true", "energy_unknown_reason": "evicted"}
        for i in range(10):
            led.put_many([make_record(request_id=f"junk{i}", energy_j=0.0, attributes=unknown)])
        kept = sorted(r["request_id"] for r in led.recent(100))
        assert kept == ["junk9", "measured0", "measured1", "measured2"]
        led.put_many([make_record(request_id=f"later{i}") for i in range(2)])
        kept = sorted(r["request_id"] for r in led.recent(100))
        assert kept == ["later0", "later1", "measured1", "measured2"]


def test_retention_keeps_only_the_newest_max_rows() -> None:
    with Ledger(":memory:", max_rows=3) as led:
        led.put_many([make_record(request_id=f"r{i}") for i in range(5)])
        assert led.count() == 3
        assert led.get("r0") is None and led.get("r1") is None
        led.put_many([make_record(request_id="r5")])
        assert sorted(r["request_id"] for r in led.recent(10)) == ["r3", "r4", "r5"]


def test_retention_drops_records_older_than_max_age() -> None:
    clock = FakeClock(1_780_000_000.0)  # Unix seconds
    with Ledger(":memory:", max_age_s=60.0, clock=clock) as led:
        led.put_many([make_record(request_id="old")])
        clock.t_s += 30.0
        led.put_many([make_record(request_id="mid")])
        clock.t_s += 45.0  # "old" is now 75 s old, "mid" 45 s
        led.put_many([make_record(request_id="new")])
        assert led.get("old") is None
        assert led.get("mid") is not None
        assert led.count() == 2


def test_file_ledger_is_wal_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path) as led:
        assert led.journal_mode == "wal"
        led.put_many([make_record(request_id="a"), make_record(request_id="b")])
    with Ledger(str(path), max_rows=2) as led:
        assert led.count() == 2
        led.put_many([make_record(request_id="c")])  # count carried over: oldest goes
        assert led.get("a") is None and led.get("c") is not None


def test_non_final_record_is_refused_and_nothing_of_the_batch_written(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="req-open"):
        ledger.put_many([make_record(request_id="ok"), make_record(request_id="req-open", final=False)])
    assert ledger.count() == 0


def test_corrupt_file_raises_config_error_naming_the_knob_and_path(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(ConfigError, match=r"ledger_path.*corrupt\.db"):
        Ledger(path)


def test_unopenable_path_raises_config_error_naming_the_knob_and_path(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "ledger.db"
    with pytest.raises(ConfigError, match=r"ledger_path.*no-such-dir"):
        Ledger(path)


def test_bad_retention_limits_name_their_knobs() -> None:
    with pytest.raises(ConfigError, match="ledger_max_rows"):
        Ledger(":memory:", max_rows=0)
    with pytest.raises(ConfigError, match="ledger_max_age_s"):
        Ledger(":memory:", max_age_s=0)


def test_puts_and_reads_from_many_threads_lose_nothing(tmp_path: Path) -> None:
    with Ledger(tmp_path / "t.db") as led:

        def writer(k: int) -> None:
            for i in range(25):
                led.put_many([make_record(request_id=f"t{k}-{i}")])
                assert led.get(f"t{k}-{i}") is not None

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert led.count() == 100


def test_a_late_task_names_an_unknown_task_only_and_keeps_the_rest_of_the_record(ledger: Ledger) -> None:
    ledger.put_many([make_record(request_id="a", task="unknown"), make_record(request_id="b", task="chat")])
    assert ledger.set_tasks({"a": "code", "b": "code", "never-seen": "code"}) == 1
    a, b = ledger.get("a"), ledger.get("b")
    assert (
        a is not None
        and a["task"] == "code"
        and a == {**make_record(request_id="a").to_json(), "task": "code"}
    )
    assert b is not None and b["task"] == "chat"  # a known task is never replaced
    row = ledger._conn.execute("SELECT task FROM requests WHERE request_id = 'a'").fetchone()
    assert row == ("code",) and ledger.counts["task_late"] == 1


def test_records_past_their_age_are_deleted_without_a_new_write() -> None:
    """A sidecar that no longer gets traffic writes nothing, so retention on writes alone kept
    records past ``max_age_s`` for good; the tick's ``expire`` deletes them (at most once a minute)."""
    now = [1_000_000.0]
    with Ledger(":memory:", max_age_s=3600.0, clock=lambda: now[0]) as led:
        led.put_many([make_record(request_id=f"old-{k}") for k in range(3)])
        now[0] += 1800.0
        led.put_many([make_record(request_id="newer")])
        assert led.expire() == 0  # a write just ran retention
        now[0] += 1900.0  # the first three are 3,700 s old, "newer" 1,900 s
        assert led.expire() == 3 and led.count() == 1 and led.get("old-0") is None
        now[0] += 10.0
        assert led.expire() == 0  # not again within EXPIRE_EVERY_S
        now[0] += 3600.0
        assert led.expire() == 1 and led.count() == 0


def test_a_late_task_is_counted_once_for_an_id_both_stored_and_waiting() -> None:
    """A record waiting under an id stored already (kept out when written) was named, and counted,
    twice: ``task_late`` 2 for one request."""
    with Ledger(":memory:", write_every_s=60.0) as led:
        led.put_new([make_record(request_id="a", task="unknown")], now_s=0.0)  # written: the first
        led.put_new([make_record(request_id="a", task="unknown")], now_s=1.0)  # waits in memory
        assert led.set_tasks({"a": "code"}) == 1 and led.counts["task_late"] == 1
        assert led.get("a")["task"] == "code"  # type: ignore[index]
