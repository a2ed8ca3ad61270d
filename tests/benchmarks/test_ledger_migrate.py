"""benchmarks/ledger_migrate.py times what it says: a schema 1 file of every record, moved whole."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.benchmarks.bench_module import load_bench


def test_the_old_file_is_schema_1_with_every_record_and_opening_it_moves_them_all(tmp_path: Path) -> None:
    bench = load_bench("ledger_migrate", "ledger_migrate_bench")
    parts = bench.batches(12_345)
    assert [len(part) for _, part in parts] == [10_000, 2_345]
    path = tmp_path / "old.db"
    bench.schema_1_file(path, parts)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        columns = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
        assert "record_json" in columns
        assert conn.execute("SELECT count(DISTINCT seq) FROM requests").fetchone()[0] == 12_345
    conn.close()
    wall_s, cpu_s, n = bench.timed_open(path)
    assert n == 12_345 and wall_s > 0 and cpu_s > 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()
