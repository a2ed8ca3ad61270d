"""The ledger's SQLite schema and the row of one record: columns for querying, the whole record as JSON.

:class:`~sidecar.export.store.Ledger` runs the statements; a record's JSON text is
:func:`~sidecar.export.record_json.record_json`.
"""

from __future__ import annotations

import json
from typing import Any

from sidecar.attribution.record_batch import Values, per_unit_j
from sidecar.attribution.records import RECORD_FIELDS
from sidecar.export.record_json import values_json

__all__ = ["COLUMNS", "INSERT", "SCHEMA", "SCHEMA_VERSION", "UPDATE", "load", "values_row"]

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,               -- put order, newest highest
    stored_unix_s REAL NOT NULL,        -- wall clock when stored (retention age)
    end_unix_s REAL,
    model TEXT NOT NULL,
    operation TEXT NOT NULL,
    task TEXT NOT NULL,
    unit TEXT NOT NULL,
    energy_j REAL NOT NULL,
    joules_per_output_unit REAL,
    prompt_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    output_units REAL NOT NULL,
    busy_s REAL NOT NULL,
    approximate INTEGER NOT NULL,
    rule TEXT NOT NULL,
    energy_source TEXT NOT NULL,
    record_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS state (      -- small named states kept across restarts (the idle floor)
    key TEXT PRIMARY KEY,
    stored_unix_s REAL NOT NULL,
    value_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_seq ON requests (seq);
CREATE INDEX IF NOT EXISTS requests_stored ON requests (stored_unix_s);
"""

COLUMNS = (
    "request_id, seq, stored_unix_s, end_unix_s, model, operation, task, unit, energy_j, "
    "joules_per_output_unit, prompt_tokens, output_tokens, output_units, busy_s, approximate, "
    "rule, energy_source, record_json"
)
INSERT = f"INSERT OR IGNORE INTO requests ({COLUMNS}) VALUES ({', '.join('?' * 18)})"
UPDATE = (
    "UPDATE requests SET "
    + ", ".join(f"{c.strip()} = ?" for c in COLUMNS.split(",")[1:])
    + " WHERE request_id = ?"
)


_BUSY, _SOURCE, _END_UNIX = (RECORD_FIELDS.index(n) for n in ("busy_s", "energy_source", "end_unix_s"))


def values_row(values: Values, seq: int, now: float) -> tuple[Any, ...]:
    """The values of one ``requests`` row (a record's field values: a :class:`RecordBatch` row), in
    :data:`COLUMNS` order; ``now``: wall seconds stored."""
    (rid, model, operation, task, unit, energy_j, _, _, prompt, output, units, *_rest) = values
    busy_s, approximate, _, rule, source = values[_BUSY : _SOURCE + 1]
    return (
        rid,
        seq,
        now,
        values[_END_UNIX],
        model,
        operation,
        task,
        unit,
        energy_j,
        per_unit_j(values),
        prompt,
        output,
        units,
        busy_s,
        int(approximate),
        rule,
        source,
        values_json(values),  # reads back as json.dumps(rec.to_json()) does; orjson, faster
    )


def load(text: str) -> dict[str, Any]:
    """A stored record's JSON text back as the dict :meth:`RequestEnergy.to_json` gives."""
    record: dict[str, Any] = json.loads(text)
    return record
