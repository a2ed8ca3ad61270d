"""A ledger file of schema 1 moved to this schema, once, when the ledger opens it.

Schema 1 kept each record twice: its main numbers as columns and the whole record as JSON
(``record_json``). Its rows are read back from that JSON and written again as rows of
:mod:`.ledger_rows` (the same ``seq`` and ``stored_unix_s``, so order and retention are
kept), in one transaction: a failure leaves the file as it was. A row whose JSON cannot be
read (not UTF-8, not JSON, not an object), or whose record schema 2 cannot store (a value a
``NOT NULL`` column cannot hold, an integer beyond 64 bits where schema 2 has a column and
schema 1 had only the JSON), is skipped and counted in the log line, never the rest. Whether
the table is still schema 1 is read again once the write lock is held (a second process may
have moved it meanwhile). The write-ahead log, which held the whole move, is truncated after
it. The file keeps the pages the old table used, for SQLite to reuse (``VACUUM`` gives them
back). A move takes time in proportion to the rows, during which the sidecar does not answer
yet, and free disk for the new table and the log.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from typing import Any

from sidecar.attribution.records import RECORD_FIELDS
from sidecar.export import ledger_rows
from sidecar.export.ledger_write import RECORD_ERRORS, transaction

__all__ = ["SCHEMA_1", "migrate"]

log = logging.getLogger(__name__)

_OLD = "requests_schema1"
# the table schema 1 made (its ``state`` table and indexes were as schema 2's)
SCHEMA_1 = """
CREATE TABLE requests (
    request_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, stored_unix_s REAL NOT NULL, end_unix_s REAL,
    model TEXT NOT NULL, operation TEXT NOT NULL, task TEXT NOT NULL, unit TEXT NOT NULL,
    energy_j REAL NOT NULL, joules_per_output_unit REAL, prompt_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, output_units REAL NOT NULL, busy_s REAL NOT NULL,
    approximate INTEGER NOT NULL, rule TEXT NOT NULL, energy_source TEXT NOT NULL,
    record_json TEXT NOT NULL
);
CREATE INDEX requests_seq ON requests (seq);
CREATE INDEX requests_stored ON requests (stored_unix_s);
"""
# a field a schema 1 record's JSON may lack (an older record): its default, else None
_DEFAULTS: dict[str, Any] = {
    "phase_j": {},
    "component_j": {},
    "attributes": {},
    "approximate": False,
    "final": True,
    "fit_quality": "",
}


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Move a schema 1 ``requests`` table (it has ``record_json``) to the current schema; the rows
    moved (0 when there is nothing to move). ``conn`` is in autocommit mode."""
    if not _schema_1(conn):
        return 0
    started = time.monotonic()
    with transaction(conn):
        if not _schema_1(conn):  # another process moved it while this one waited for the lock
            return 0
        moved, skipped = _move(conn)
        conn.execute(f"DROP TABLE {_OLD}")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the log held the whole move: give its disk back
    log.warning(
        "ledger %s: moved %d record(s) to schema %d in %.1f s (%d unreadable, skipped)",
        path,
        moved,
        ledger_rows.SCHEMA_VERSION,
        time.monotonic() - started,
        skipped,
    )
    return moved


def _schema_1(conn: sqlite3.Connection) -> bool:
    return "record_json" in {row[1] for row in conn.execute("PRAGMA table_info(requests)")}


def _move(conn: sqlite3.Connection) -> tuple[int, int]:
    conn.execute("DROP INDEX IF EXISTS requests_seq")  # the new table's indexes take these names
    conn.execute("DROP INDEX IF EXISTS requests_stored")
    conn.execute(f"ALTER TABLE requests RENAME TO {_OLD}")
    for statement in ledger_rows.SCHEMA.split(";"):  # executescript would commit first
        if statement.strip():
            conn.execute(statement)
    moved = skipped = 0
    rows = conn.execute(f"SELECT seq, stored_unix_s, CAST(record_json AS BLOB) FROM {_OLD}")
    for seq, stored_unix_s, raw in rows:  # bytes: text that is not UTF-8 fails this row only
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise TypeError(f"a record's JSON is an object, not {type(rec).__name__}")
            values = tuple(rec.get(name, _DEFAULTS.get(name)) for name in RECORD_FIELDS)
            conn.execute(ledger_rows.INSERT, ledger_rows.values_row(values, seq, stored_unix_s))
        except RECORD_ERRORS as err:  # and not JSON or not UTF-8 (ValueError), not an object (TypeError)
            skipped += 1
            log.debug("ledger: a schema 1 row (seq %s) was not moved: %s", seq, err)
            continue
        moved += 1
    return moved, skipped
