"""The ledger's SQLite schema, and a record as one row of columns: nothing stored twice.

Every field of a record is a column (the numbers, names and times can be queried with
``sqlite3``), except its three dicts (``phase_j``, ``component_j``, ``attributes``), kept
together as JSON text in ``dicts_json``. A float a column cannot hold (SQLite stores NaN as
NULL) goes into that JSON too, under ``floats``, and overrides its column when read back.
:func:`record` gives back what :meth:`RequestEnergy.to_json` gave (stored records are final; a
number a ``REAL`` column holds reads back as a float). Schema 1 also kept the whole record as
JSON (``record_json``): more than twice the bytes a row, and a JSON text to write a record;
:mod:`.ledger_migrate` moves a schema 1 file to this one when the ledger opens it.
"""

from __future__ import annotations

import json
from typing import Any

from sidecar.attribution.record_batch import Values, per_unit_j
from sidecar.attribution.records import RECORD_FIELDS
from sidecar.export.ledger_json import json_text

__all__ = [
    "COLUMNS",
    "INSERT",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SELECT",
    "load",
    "record",
    "values_row",
]

SCHEMA_VERSION = 2

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
    start_s REAL,                       -- the sidecar's monotonic clock
    end_s REAL,
    energy_low_j REAL,
    energy_high_j REAL,
    fit_quality TEXT NOT NULL,
    dicts_json TEXT NOT NULL            -- {"phase_j": .., "component_j": .., "attributes": ..}
);
CREATE TABLE IF NOT EXISTS state (      -- small named states kept across restarts (the idle floor)
    key TEXT PRIMARY KEY,
    stored_unix_s REAL NOT NULL,
    value_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_seq ON requests (seq);
CREATE INDEX IF NOT EXISTS requests_stored ON requests (stored_unix_s);
-- the records without measured energy (0 J), oldest first: retention beyond max_rows takes them first
CREATE INDEX IF NOT EXISTS requests_empty ON requests (seq) WHERE energy_j = 0;
"""

COLUMNS = (
    "request_id, seq, stored_unix_s, end_unix_s, model, operation, task, unit, energy_j, "
    "joules_per_output_unit, prompt_tokens, output_tokens, output_units, busy_s, approximate, "
    "rule, energy_source, start_s, end_s, energy_low_j, energy_high_j, fit_quality, dicts_json"
)
_N = len(COLUMNS.split(","))
# a stored id is left as it is (no row changed: the caller tells by the row count); not "OR IGNORE",
# which also skips, without a word, a row with NULL in a NOT NULL column (a NaN): that one raises
INSERT = (
    f"INSERT INTO requests ({COLUMNS}) VALUES ({', '.join('?' * _N)}) ON CONFLICT (request_id) DO NOTHING"
)
SELECT = f"SELECT {COLUMNS} FROM requests"
# the nullable float columns: a NaN among them is kept in dicts_json (SQLite would store NULL)
_NULLABLE = ("end_unix_s", "start_s", "end_s", "energy_low_j", "energy_high_j", "joules_per_output_unit")
_KEYS = (*RECORD_FIELDS, "joules_per_output_unit")  # RequestEnergy.to_json's keys, in its order
_ORDER = (  # as values_row and record above unpack and list a record's fields
    "request_id model operation task unit energy_j phase_j component_j prompt_tokens output_tokens "
    "output_units start_s end_s end_unix_s busy_s approximate final rule energy_source attributes "
    "energy_low_j energy_high_j fit_quality"
)
if tuple(_ORDER.split()) != RECORD_FIELDS:
    raise ImportError("ledger_rows: RequestEnergy's fields changed; update values_row and record")


def values_row(values: Values, seq: int, now: float) -> tuple[Any, ...]:
    """The values of one ``requests`` row (a record's field values: a :class:`RecordBatch` row), in
    :data:`COLUMNS` order; ``now``: wall seconds stored."""
    (rid, model, operation, task, unit, energy_j, phase_j, component_j, prompt, output, units) = values[:11]
    (start_s, end_s, end_unix_s, busy_s, approximate, _, rule, source, attributes, low, high, quality) = (
        values[11:]
    )
    per_unit = per_unit_j(values)
    dicts = {"phase_j": phase_j, "component_j": component_j, "attributes": attributes}
    # x != x: NaN only (None == None); SQLite would make a NaN NULL, the JSON keeps it. Each checked
    # in turn, nothing made unless one is NaN: this runs for every record stored.
    if (
        end_unix_s != end_unix_s
        or start_s != start_s
        or end_s != end_s
        or low != low
        or high != high
        or per_unit != per_unit
    ):
        nullable = (end_unix_s, start_s, end_s, low, high, per_unit)  # in _NULLABLE order
        dicts["floats"] = {name: x for name, x in zip(_NULLABLE, nullable, strict=True) if x != x}
    return (
        rid,
        seq,
        now,
        end_unix_s,
        model,
        operation,
        task,
        unit,
        energy_j,
        per_unit,
        prompt,
        output,
        units,
        busy_s,
        int(approximate),
        rule,
        source,
        start_s,
        end_s,
        low,
        high,
        quality,
        json_text(dicts),
    )


def record(row: tuple[Any, ...]) -> dict[str, Any]:
    """The record of a row read by :data:`SELECT`, as :meth:`RequestEnergy.to_json` gives it."""
    rid, _, _, end_unix_s, model, operation, task, unit, energy_j, per_unit = row[:10]
    prompt, output, units, busy_s, approximate, rule, source = row[10:17]
    start_s, end_s, low, high, quality, text = row[17:]
    dicts = json.loads(text)
    out = dict(
        zip(
            _KEYS,
            (
                *(rid, model, operation, task, unit, energy_j, dicts["phase_j"], dicts["component_j"]),
                *(prompt, output, units, start_s, end_s, end_unix_s, busy_s, bool(approximate)),
                *(True, rule, source, dicts["attributes"], low, high, quality, per_unit),  # final: True
            ),
            strict=True,
        )
    )
    out.update(dicts.get("floats", ()))  # NaN, which its column holds as NULL
    return out


def load(text: str) -> dict[str, Any]:
    """A stored state's JSON text back as a dict."""
    state: dict[str, Any] = json.loads(text)
    return state
