"""benchmarks/ledger_insert.py's tables are what it says: ids found by hash, no index at all, the
ledger's rows by id or in the batch's order; each holds every record it was given."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.benchmarks.bench_module import load_bench


def indexes(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index'") if row[0]}


def test_each_table_holds_every_record_and_has_the_indexes_its_row_names(tmp_path: Path) -> None:
    bench = load_bench("ledger_insert", "ledger_insert_bench")
    batch = bench.batch_of(600)
    hashed = bench.RawTable(
        tmp_path / "h.db", bench.HASHED_SCHEMA, bench.HASHED_INSERT, hashed=True, retain=True
    )
    floor = bench.RawTable(
        tmp_path / "f.db", bench.no_index_schema(), bench.APPEND, hashed=False, retain=False
    )
    for table in (hashed, floor):
        table.put(batch.values)
        assert table.conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 600
    rid = batch.values[7][0]
    found = hashed.conn.execute(
        "SELECT request_id FROM requests WHERE id_hash = ?", (bench.id_hash(rid),)
    ).fetchall()
    assert found == [(rid,)]
    assert any("(id_hash)" in sql for sql in indexes(hashed.conn))
    assert indexes(floor.conn) == set()
    assert (
        floor.conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE 'sqlite_autoindex%'"
        ).fetchone()[0]
        == 0
    )


def test_the_ledgers_rows_go_in_by_id_or_in_the_batchs_order_as_each_row_says(tmp_path: Path) -> None:
    bench = load_bench("ledger_insert", "ledger_insert_bench")
    batch = bench.batch_of(300)
    given_ids = [values[0] for values in batch.values]
    for by_id in (True, False):
        table = bench.ledger_table(tmp_path / f"{by_id}.db", by_id=by_id)
        table.put(batch.values)
        inserted = [r[0] for r in table.conn.execute("SELECT request_id FROM requests ORDER BY rowid")]
        by_seq = [r[0] for r in table.conn.execute("SELECT request_id FROM requests ORDER BY seq")]
        assert inserted == (sorted(given_ids) if by_id else given_ids)
        assert by_seq == given_ids  # put order, either way


def test_the_page_size_and_cache_rows_are_files_of_those_pages_and_caches(tmp_path: Path) -> None:
    bench = load_bench("ledger_insert", "ledger_insert_bench")
    batch = bench.batch_of(200)
    small = bench.ledger_table(tmp_path / "pages.db", page_bytes=1024)
    cached = bench.ledger_table(tmp_path / "cache.db", cache_kib=8000)
    for table, page_bytes, cache in ((small, 1024, -2000), (cached, 4096, -8000)):
        table.put(batch.values)
        assert table.conn.execute("PRAGMA page_size").fetchone()[0] == page_bytes
        assert table.conn.execute("PRAGMA cache_size").fetchone()[0] == cache
        assert table.conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 200
