"""The ledger's CPU per record stored, against a table with no index and a hash-keyed layout tried.

Final records of vLLM-like requests (ids as random as vLLM's ``chatcmpl-<32 hex>``, a trace id
each) are stored in batches of ``--batch`` (about what one tick finalizes in
``ingest_grpc.py``'s flood) into ten SQLite files side by side, the same batch into each in
turn so all ten see the same machine:

* **the ledger** (the product): :meth:`sidecar.export.store.Ledger.put_many`, the id text the
  primary key, a record's fields its columns and its dicts one JSON text
  (:mod:`sidecar.export.ledger_rows`, schema 2);
* **schema 1's rows** (the ledger before 2026-12-01): the main numbers as columns and the whole
  record as JSON too (:data:`sidecar.export.ledger_migrate.SCHEMA_1`), written as the ledger
  writes its rows;
* **its rows** by plain SQL (the ledger's schema, rows and statements), each way the ledger
  wrote them before, one difference a row: the WAL copied into the file every 1,000 pages
  (SQLite's default) instead of the ledger's :data:`~sidecar.export.store.WAL_CHECKPOINT_PAGES`;
  the batch's insert inside a ``SAVEPOINT`` (so a refused batch could be undone alone: SQLite
  then copies each page the batch touches to a statement journal first); the rows inserted in
  the batch's order instead of by id (each new id then lands on a random index page rather than
  at or after the last one); all three with schema 1's rows, as the ledger wrote them
  before stop 20; pages of 1 KiB instead of SQLite's 4 KiB (a batch's random ids would touch
  smaller pages; tried 2026-12-04, not adopted); a page cache of 8 MB instead of SQLite's 2 MB
  (more of the id index held between batches; tried 2026-12-04, not adopted);
* **ids by hash** (tried, not adopted): the same rows with ``seq`` the rowid and an index on a
  64-bit BLAKE2b hash of the id instead of the id (inserted by hash), a look-up of the batch's
  hashes before the insert (no primary key to refuse a stored id), the ledger's checkpoint; it
  changes the file format and makes an ad-hoc ``sqlite3`` query by id a scan, for the gain
  this prints;
* **ids indexed in memory** (measured 2026-12-06, not adopted): the same rows with ``seq`` the
  rowid and no index on the id, the ids' hashes and rows indexed in memory instead
  (:mod:`memory_ids`); the run also prints the bytes that index holds a record;
* **no index** (a floor no ledger can go under and still find a record by id): the same rows
  appended to a table without indexes, and no retention (without its index, a scan).

Each figure is the thread's CPU time (``time.thread_time``) per record, building the rows (their
JSON included) counted, over the last quarter of the run (the table at its largest) and over
the whole run; then the bytes each file takes on disk once closed (its WAL copied in), per
record. A random key costs more as the table grows: each new entry lands on a random index
page, and a commit writes every page it touched.

Ends with one line ``ledger us per record N`` (the product, last quarter).

    .venv/bin/python benchmarks/ledger_insert.py [--records 200000] [--batch 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_ids import MemoryIndexedTable
from scratch import scratch_dir

from sidecar import knobs
from sidecar.attribution.record_batch import RecordBatch, Values
from sidecar.export import ledger_migrate, ledger_rows
from sidecar.export.store import WAL_CHECKPOINT_PAGES, Ledger
from tests.sidecar.export.factories import make_record, schema_1_row

HASHED_SCHEMA = (
    ledger_rows.SCHEMA.replace("request_id TEXT PRIMARY KEY,", "request_id TEXT NOT NULL,")
    .replace("seq INTEGER NOT NULL,", "seq INTEGER PRIMARY KEY,")
    .replace("dicts_json TEXT NOT NULL", "dicts_json TEXT NOT NULL, id_hash INTEGER NOT NULL")
    .replace("ON requests (seq)", "ON requests (id_hash)")
)
_N = len(ledger_rows.COLUMNS.split(","))
HASHED_INSERT = f"INSERT INTO requests ({ledger_rows.COLUMNS}, id_hash) VALUES ({','.join('?' * (_N + 1))})"
# schema 1 (before 2026-12-01): the main numbers as columns and the whole record as JSON too
SCHEMA_1 = ledger_migrate.SCHEMA_1 + ledger_rows.SCHEMA  # the requests table exists: its state table
INSERT_1 = f"INSERT OR IGNORE INTO requests VALUES ({','.join('?' * 18)})"
# the ledger's rows appended where no index can refuse them (the floor table: no key to conflict on)
APPEND = f"INSERT INTO requests ({ledger_rows.COLUMNS}) VALUES ({','.join('?' * _N)})"


def batch_of(n: int) -> RecordBatch:
    """``n`` final records with vLLM-like random ids, as the attributor hands them on."""
    return RecordBatch.of(
        make_record(request_id=f"chatcmpl-{uuid.uuid4().hex}", attributes={"trace_id": uuid.uuid4().hex})
        for _ in range(n)
    )


LEDGER = "the ledger (Ledger.put_many, id primary key)"
MAX_AGE_S: float = knobs.default("ledger_max_age_s")  # the ledger's retention, as it runs by default


class RawTable:
    """Rows of values into a file by plain SQL, as the ledger writes a batch (one transaction)."""

    def __init__(
        self,
        path: Path,
        schema: str,
        insert: str,
        *,
        hashed: bool,
        retain: bool,
        savepoint: bool = False,
        checkpoint_pages: int = WAL_CHECKPOINT_PAGES,
        by_key: bool = True,
        row: Callable[[Values, int, float], tuple[Any, ...]] = ledger_rows.values_row,
        page_bytes: int = 4096,
        cache_kib: int = 2000,
    ) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute(f"PRAGMA page_size={page_bytes}")  # a new file: set before its first page
        self.conn.execute(f"PRAGMA cache_size=-{cache_kib}")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(f"PRAGMA wal_autocheckpoint={checkpoint_pages}")
        self.conn.executescript(schema)
        self.insert, self.hashed, self.retain, self.seq = insert, hashed, retain, 0
        self.savepoint, self.by_key, self.row = savepoint, by_key, row

    def put(self, batch: list[Values]) -> None:
        now = time.time()
        rows = list(map(self.row, batch, range(self.seq + 1, self.seq + 1 + len(batch)), repeat(now)))
        self.seq += len(rows)
        self.conn.execute("BEGIN IMMEDIATE")
        if self.hashed:
            rows = [(*row, id_hash(row[0])) for row in rows]
        if self.by_key:  # as the ledger inserts them: by the indexed key (id, or its hash)
            rows.sort(key=itemgetter(-1 if self.hashed else 0))
        if self.hashed:
            for k in range(0, len(rows), 500):  # stored ids among the batch's (none here, looked for)
                part = [row[-1] for row in rows[k : k + 500]]
                marks = ",".join("?" * len(part))
                self.conn.execute(
                    f"SELECT request_id FROM requests WHERE id_hash IN ({marks})", part
                ).fetchall()
        if self.savepoint:
            self.conn.execute("SAVEPOINT batch")
        self.conn.executemany(self.insert, rows)
        if self.savepoint:
            self.conn.execute("RELEASE batch")
        if self.retain:  # by age, as the ledger does (on its stored_unix_s index)
            self.conn.execute("DELETE FROM requests WHERE stored_unix_s < ?", (now - MAX_AGE_S,))
        self.conn.execute("COMMIT")


def id_hash(request_id: str) -> int:
    """A request id's BLAKE2b-64 as a signed 64-bit integer (SQLite's INTEGER)."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "little", signed=True)


def ledger_table(
    path: Path,
    *,
    savepoint: bool = False,
    checkpoint_pages: int = WAL_CHECKPOINT_PAGES,
    by_id: bool = True,
    schema_1: bool = False,
    page_bytes: int = 4096,
    cache_kib: int = 2000,
) -> RawTable:
    """The ledger's schema and rows by plain SQL: by default as the ledger writes them; with the batch
    in a savepoint, another WAL checkpoint, the rows in the batch's order instead of by id,
    schema 1's rows, another page size or page cache."""
    return RawTable(
        path,
        SCHEMA_1 if schema_1 else ledger_rows.SCHEMA,
        INSERT_1 if schema_1 else ledger_rows.INSERT,
        hashed=False,
        retain=True,
        savepoint=savepoint,
        checkpoint_pages=checkpoint_pages,
        by_key=by_id,
        row=schema_1_row if schema_1 else ledger_rows.values_row,
        page_bytes=page_bytes,
        cache_kib=cache_kib,
    )


def no_index_schema() -> str:
    """The ledger's requests table without any index."""
    table = ledger_rows.SCHEMA.split(";")[0].replace(
        "request_id TEXT PRIMARY KEY", "request_id TEXT NOT NULL"
    )
    return table + ";"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000, help="records stored into each file")
    parser.add_argument("--batch", type=int, default=1024, help="records per put (one tick's finals)")
    args = parser.parse_args()
    with scratch_dir("jt-ledger-insert-") as tmp:
        ledger = Ledger(tmp / "ledger.db")
        small_pages = ledger_table(tmp / "pages.db", page_bytes=1024)
        big_cache = ledger_table(tmp / "cache.db", cache_kib=8000)
        hashed = RawTable(tmp / "hashed.db", HASHED_SCHEMA, HASHED_INSERT, hashed=True, retain=True)
        default_ck = ledger_table(tmp / "checkpoint.db", checkpoint_pages=1000)
        saved = ledger_table(tmp / "savepoint.db", savepoint=True)
        given = ledger_table(tmp / "given.db", by_id=False)
        schema1 = ledger_table(tmp / "schema1.db", schema_1=True)
        before = ledger_table(
            tmp / "before.db", savepoint=True, checkpoint_pages=1000, by_id=False, schema_1=True
        )
        in_memory = MemoryIndexedTable(tmp / "memory.db")
        floor = RawTable(
            tmp / "floor.db", no_index_schema(), APPEND, hashed=False, retain=False, by_key=False
        )
        puts: dict[str, Callable[[RecordBatch], object]] = {
            LEDGER: ledger.put_many,
            "schema 1's rows (the ledger before 2026-12-01)": lambda b: schema1.put(b.values),
            "its rows, SQLite's WAL checkpoint (1,000 pages)": lambda b: default_ck.put(b.values),
            "its rows in a savepoint": lambda b: saved.put(b.values),
            "its rows in the batch's order, not by id": lambda b: given.put(b.values),
            "all three, schema 1: the ledger before stop 20": lambda b: before.put(b.values),
            "its rows in 1 KiB pages (tried, not adopted)": lambda b: small_pages.put(b.values),
            "its rows, an 8 MB page cache (tried, not adopted)": lambda b: big_cache.put(b.values),
            "ids by hash (tried, not adopted)": lambda b: hashed.put(b.values),
            "ids indexed in memory (measured, not adopted)": lambda b: in_memory.put(b.values, MAX_AGE_S),
            "no index (appended only: a floor)": lambda b: floor.put(b.values),
        }
        spent = dict.fromkeys(puts, 0.0)
        late = dict.fromkeys(puts, 0.0)
        batches = max(args.records // args.batch, 1)
        for k in range(batches):
            batch = batch_of(args.batch)
            names = list(puts)
            for name in names[k % len(names) :] + names[: k % len(names)]:  # each goes first in turn
                t0 = time.thread_time()
                puts[name](batch)
                spent_s = time.thread_time() - t0
                spent[name] += spent_s
                if k >= batches * 3 // 4:
                    late[name] += spent_s
        n, n_late = batches * args.batch, (batches - batches * 3 // 4) * args.batch
        print(f"{n} records into each file in batches of {args.batch}; CPU us per record:")
        print(f"  {'':52s} {'last quarter':>13s} {'whole run':>10s}")
        for name in puts:
            print(f"  {name:52s} {late[name] / n_late * 1e6:13.1f} {spent[name] / n * 1e6:10.1f}")
        assert ledger.count() == n, "every record stored"
        assert len(in_memory.ids) == n and not in_memory.kept_out, "every id indexed, none taken as stored"
        index_bytes = in_memory.ids.nbytes / n
        ours = late[LEDGER] / n_late * 1e6
        ledger.close()
        tables = (hashed, schema1, default_ck, saved, given, before, small_pages, big_cache, in_memory, floor)
        for table in tables:
            table.conn.close()  # the last connection to a file copies its WAL in and deletes it
        files = ("ledger", "schema1", "checkpoint", "savepoint", "given", "before", "pages", "cache")
        files += ("hashed", "memory", "floor")
        print("  bytes on disk per record (each file closed: its WAL copied in):")
        for name, file in zip(puts, files, strict=True):
            size = sum(p.stat().st_size for p in tmp.glob(f"{file}.db*"))
            print(f"  {name:52s} {size / n:13.0f}")
        print(f"  the ids indexed in memory: {index_bytes:.0f} bytes a record held by the index")
    print(f"ledger us per record {ours:.1f}")


if __name__ == "__main__":
    main()
