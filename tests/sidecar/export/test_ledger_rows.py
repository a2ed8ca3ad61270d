"""The ledger's rows: any record stored reads back as its to_json() did; schema 1 files are moved.

"Reads back the same" is checked as ``json.dumps`` of both (NaN-safe; it tells 1 from 1.0), after
what a typed column does to a value: a ``REAL`` column gives a float (an int 5 reads back 5.0,
-0.0 reads back 0.0) and an ``INTEGER`` column an int (True reads back 1).
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from sidecar.attribution.record_batch import values_of
from sidecar.attribution.records import RequestEnergy
from sidecar.errors import ConfigError
from sidecar.export import ledger_migrate, ledger_rows
from sidecar.export.ledger_migrate import SCHEMA_1
from sidecar.export.store import Ledger
from tests.sidecar.export.factories import make_record, schema_1_row
from tests.sidecar.export.test_ledger_json import records

_REAL = ("energy_j", "output_units", "start_s", "end_s", "end_unix_s", "busy_s")
_REAL += ("energy_low_j", "energy_high_j", "joules_per_output_unit")
_INTEGER = ("prompt_tokens", "output_tokens")
_NOT_NULL = ("energy_j", "output_units", "busy_s")


def _as_columns_give_it(record: dict[str, Any]) -> str:
    out = dict(record)
    for name in _REAL:
        value = out[name]
        if isinstance(value, int | float):
            out[name] = float(value) if value != 0 else 0.0
    for name in _INTEGER:
        out[name] = int(out[name])
    return json.dumps(out)


def _refused_for_a_reason(rec: RequestEnergy) -> bool:
    """Why the ledger may refuse a record: json refuses it, an int beyond 64 bits, NaN where NULL is
    not allowed."""
    try:
        json.dumps(rec.to_json())
    except (TypeError, ValueError):
        return True
    numbers = [getattr(rec, name) for name in (*_REAL[:-1], *_INTEGER)]
    if any(isinstance(x, int) and not -(2**63) <= x < 2**63 for x in numbers):
        return True
    return any(isinstance(x, float) and math.isnan(x) for x in (getattr(rec, n) for n in _NOT_NULL))


@settings(max_examples=400, deadline=None)
@given(records())
def test_a_stored_record_reads_back_as_its_json_form(rec: RequestEnergy) -> None:
    rec = replace(rec, final=True)
    with Ledger(":memory:") as led:
        stored = led.put_many([rec, make_record(request_id="\x00neighbour")]) == 2
        assert led.get("\x00neighbour") is not None  # a refused record costs only itself
        if not stored:
            assert led.counts["unstorable"] == 1 and _refused_for_a_reason(rec)
            return
        got = led.get(rec.request_id)
    assert got is not None
    assert _as_columns_give_it(got) == _as_columns_give_it(json.loads(json.dumps(rec.to_json())))


def test_nan_where_a_column_would_hold_null_reads_back_nan() -> None:
    rec = make_record(start_s=float("nan"), energy_low_j=float("nan"), energy_high_j=None)
    with Ledger(":memory:") as led:
        led.put_many([rec])
        got = led.get(rec.request_id)
    assert got is not None
    assert math.isnan(got["start_s"]) and math.isnan(got["energy_low_j"]) and got["energy_high_j"] is None
    assert got["end_s"] == 104.0


def test_a_row_keeps_each_value_once(tmp_path: Path) -> None:
    rec = make_record(request_id="chatcmpl-abc", attributes={"trace_id": "t" * 32})
    with Ledger(tmp_path / "l.db") as led:
        led.put_many([rec])
    with sqlite3.connect(tmp_path / "l.db") as conn:
        (text,) = conn.execute("SELECT dicts_json FROM requests").fetchone()
        names = [row[1] for row in conn.execute("PRAGMA table_info(requests)")]
    assert json.loads(text) == {
        "phase_j": rec.phase_j,
        "component_j": rec.component_j,
        "attributes": rec.attributes,
    }
    assert "record_json" not in names and ledger_rows.COLUMNS.replace(" ", "").split(",") == names


def _schema_1_file(path: Path, records: list[RequestEnergy], stored_unix_s: float) -> None:
    """A ledger file as jouletrace wrote schema 1: main numbers as columns, the record as JSON."""
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_1 + ledger_rows.SCHEMA + "PRAGMA user_version=1;")  # state, indexes
        for seq, rec in enumerate(records, start=1):
            conn.execute(
                f"INSERT INTO requests VALUES ({','.join('?' * 18)})",
                schema_1_row(values_of(rec), seq, stored_unix_s + seq),
            )
        conn.execute(
            "INSERT INTO state VALUES ('floor', ?, ?)", (stored_unix_s, json.dumps({"idle_w": 70.0}))
        )


def test_a_schema_1_file_is_moved_with_its_records_order_and_state(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = [
        make_record(request_id=f"r{i}", energy_j=1.5 + i, task="unknown" if i == 2 else "chat")
        for i in range(5)
    ]
    old[1] = replace(old[1], energy_low_j=1.0, energy_high_j=3.0, fit_quality="good", attributes={"k": "v"})
    _schema_1_file(path, old, stored_unix_s=1_000.0)
    with sqlite3.connect(path) as conn:  # a row schema 1 could not read back either
        conn.execute("UPDATE requests SET record_json = '{not json' WHERE request_id = 'r4'")
    with Ledger(path, clock=lambda: 2_000.0) as led:
        assert [led.get(f"r{i}") for i in range(4)] == [rec.to_json() for rec in old[:4]]
        assert led.get("r4") is None and led.count() == 4
        assert [r["request_id"] for r in led.recent(10)] == ["r3", "r2", "r1", "r0"]  # seq kept
        assert led.load_state("floor") == {"idle_w": 70.0}
        assert led.set_tasks({"r2": "coding"}) == 1 and led.get("r2")["task"] == "coding"  # type: ignore[index]
        assert led.put_many([make_record(request_id="new")]) == 1
        assert led.recent(1)[0]["request_id"] == "new"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == ledger_rows.SCHEMA_VERSION
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        stored = conn.execute("SELECT stored_unix_s FROM requests WHERE request_id = 'r0'").fetchone()[0]
    assert tables == {"requests", "state"} and stored == 1_001.0  # retention still ages it from then


def test_a_schema_1_file_ages_out_by_its_own_stored_times(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _schema_1_file(path, [make_record(request_id=f"r{i}") for i in range(3)], stored_unix_s=1_000.0)
    with Ledger(path, max_age_s=100.0, clock=lambda: 1_102.5) as led:
        assert led.put_many([make_record(request_id="new")]) == 1
        assert sorted(r["request_id"] for r in led.recent(10)) == ["new", "r2"]  # stored at 1,001 to 1,003


def test_a_move_that_fails_leaves_the_schema_1_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _schema_1_file(path, [make_record(request_id=f"r{i}") for i in range(200)], stored_unix_s=1_000.0)
    with sqlite3.connect(path) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    real_connect = sqlite3.connect

    def full_disk(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        conn.execute(f"PRAGMA max_page_count = {pages}")  # no room for the new table: SQLITE_FULL
        return conn

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite3, "connect", full_disk)
        with pytest.raises(ConfigError, match="ledger_path"):
            Ledger(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 200
        assert "record_json" in {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
    with Ledger(path) as led:  # room again: moved
        assert led.count() == 200 and led.get("r7") == make_record(request_id="r7").to_json()


def test_a_schema_1_row_that_cannot_be_read_or_stored_is_skipped_and_the_rest_are_moved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.db"
    _schema_1_file(path, [make_record(request_id=f"r{i}") for i in range(6)], stored_unix_s=1_000.0)
    with sqlite3.connect(path) as conn:
        for rid, text in (("r1", "null"), ("r2", "[1]"), ("r4", '{"request_id": "r4", "model": null}')):
            conn.execute("UPDATE requests SET record_json = ? WHERE request_id = ?", (text, rid))
        conn.execute("UPDATE requests SET record_json = CAST(x'7bff7d' AS TEXT) WHERE request_id = 'r3'")
    with Ledger(path) as led:  # not UTF-8, not an object, NULL where schema 2 has NOT NULL
        assert led.count() == 2 and [r["request_id"] for r in led.recent(10)] == ["r5", "r0"]
        assert led.get("r5") == make_record(request_id="r5").to_json()
    assert "moved 2 record(s)" in caplog.text and "(4 unreadable, skipped)" in caplog.text


def test_the_write_ahead_log_of_a_move_is_given_back(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _schema_1_file(path, [make_record(request_id=f"r{i}") for i in range(2_000)], stored_unix_s=1_000.0)
    with Ledger(path) as led:
        assert led.count() == 2_000
        wal_bytes = path.with_name(path.name + "-wal").stat().st_size
    assert wal_bytes < 64 * 1024  # the schema's version stamp after the move; the move wrote ~1 MB


def test_a_file_moved_by_another_process_while_this_one_waited_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _schema_1_file(path, [make_record(request_id="r0")], stored_unix_s=1_000.0)
    with Ledger(path) as led:  # the other process: moves it
        assert led.count() == 1
    looks = [True]  # this one saw schema 1 before it took the write lock, then looks again
    real = ledger_migrate._schema_1
    conn = sqlite3.connect(path, isolation_level=None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ledger_migrate, "_schema_1", lambda c: looks.pop() if looks else real(c))
        assert ledger_migrate.migrate(conn, str(path)) == 0 and not conn.in_transaction
    conn.close()
    with Ledger(path) as led:
        assert led.get("r0") == make_record(request_id="r0").to_json()


@settings(max_examples=200, deadline=None)
@given(records())
def test_a_record_whose_id_is_stored_is_kept_out_and_the_stored_one_stays(rec: RequestEnergy) -> None:
    rec = replace(rec, final=True)
    with Ledger(":memory:") as led:
        led.put_many([make_record(request_id=rec.request_id, energy_j=99.0)])
        written = led.put_many([rec])
        got = led.get(rec.request_id)
        kept = led.counts["duplicate_kept"] + led.counts["unstorable"]
    assert got is not None and got["energy_j"] == 99.0  # a final record is final
    assert written == 0 and kept == 1
