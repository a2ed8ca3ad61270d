"""A ledger whose request ids are indexed in memory, not by SQLite: a variant ``ledger_insert.py`` measures.

SQLite's index on the random request id is most of what the ledger costs a record
(docs/measurements/ingest.md, "Where 50,000 spans/s is blocked"). The variant here keeps the
ledger's rows with ``seq`` as the table's rowid and no index on the id; the ids' 64-bit hashes and
their rows' ``seq`` are kept in memory instead (:class:`MemoryIds`: sorted NumPy arrays, a batch's
added as its own sorted part, the parts merged into one every :data:`MERGE_PARTS` batches). A
batch's ids are looked up before it is written (a stored id would be kept out, as the ledger keeps
it out: a hash found is checked against the id its row holds). Not the product: retention's
deletions would have to leave the index too (none happen in the benchmark's run), and the index
would be rebuilt from the file when the sidecar opens it. What it shows is the CPU such a ledger
costs a record, and the memory its index holds (:attr:`MemoryIds.nbytes`).
"""

from __future__ import annotations

import sqlite3
import time
from itertools import repeat
from pathlib import Path

import numpy as np

from sidecar.attribution.record_batch import Values
from sidecar.export import ledger_rows
from sidecar.export.store import WAL_CHECKPOINT_PAGES

__all__ = ["MERGE_PARTS", "SCHEMA", "MemoryIds", "MemoryIndexedTable"]

MERGE_PARTS = 16  # batches' sorted parts held apart before they are merged into one
SCHEMA = (
    ledger_rows.SCHEMA.replace("request_id TEXT PRIMARY KEY,", "request_id TEXT NOT NULL,")
    .replace("seq INTEGER NOT NULL,", "seq INTEGER PRIMARY KEY,")  # the rowid: no index of its own
    .replace("CREATE INDEX IF NOT EXISTS requests_seq ON requests (seq);\n", "")
)
_N = len(ledger_rows.COLUMNS.split(","))
INSERT = f"INSERT INTO requests ({ledger_rows.COLUMNS}) VALUES ({','.join('?' * _N)})"


class MemoryIds:
    """Request ids' hashes with their rows' ``seq``, sorted by hash, in a few parts."""

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []  # (hashes sorted, their seqs)

    def __len__(self) -> int:
        return sum(h.size for h, _ in self._parts)

    @property
    def nbytes(self) -> int:
        return sum(h.nbytes + s.nbytes for h, s in self._parts)

    def seqs_of(self, hashes: np.ndarray) -> np.ndarray:
        """The ``seq`` held for each hash, -1 where none is."""
        out = np.full(hashes.size, -1, dtype=np.int64)
        for part, seqs in self._parts:
            at = np.minimum(np.searchsorted(part, hashes), part.size - 1)
            hit = part[at] == hashes
            out[hit] = seqs[at[hit]]
        return out

    def add(self, hashes: np.ndarray, seqs: np.ndarray) -> None:
        if not hashes.size:
            return
        order = np.argsort(hashes, kind="stable")
        self._parts.append((hashes[order], seqs[order]))
        if len(self._parts) >= MERGE_PARTS:
            merged_h = np.concatenate([h for h, _ in self._parts])
            merged_s = np.concatenate([s for _, s in self._parts])
            order = np.argsort(merged_h, kind="stable")
            self._parts = [(merged_h[order], merged_s[order])]


class MemoryIndexedTable:
    """The ledger's rows by plain SQL into a table with no id index; the ids indexed in memory."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        self.conn.executescript(SCHEMA)
        self.ids = MemoryIds()
        self.seq = 0
        self.kept_out = 0

    def put(self, batch: list[Values], max_age_s: float) -> None:
        now = time.time()
        seqs = np.arange(self.seq + 1, self.seq + 1 + len(batch), dtype=np.int64)
        rows = list(map(ledger_rows.values_row, batch, seqs.tolist(), repeat(now)))
        hashes = np.fromiter((hash(row[0]) for row in rows), dtype=np.int64, count=len(rows))
        found = self.ids.seqs_of(hashes)
        if (found >= 0).any():  # a hash held: stored already if its row holds the same id
            rows, hashes, seqs = self._new_only(rows, hashes, found)
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(INSERT, rows)
        self.conn.execute("DELETE FROM requests WHERE stored_unix_s < ?", (now - max_age_s,))
        self.conn.execute("COMMIT")
        self.seq += len(batch)
        self.ids.add(hashes, seqs)

    def _new_only(
        self, rows: list[tuple[object, ...]], hashes: np.ndarray, found: np.ndarray
    ) -> tuple[list[tuple[object, ...]], np.ndarray, np.ndarray]:
        """The rows whose id is not stored (a row found by hash holding another id is new)."""
        keep = np.ones(len(rows), dtype=bool)
        for i in np.flatnonzero(found >= 0).tolist():
            stored = self.conn.execute("SELECT request_id FROM requests WHERE seq = ?", (int(found[i]),))
            if stored.fetchone() == (rows[i][0],):
                keep[i] = False
        self.kept_out += int(np.count_nonzero(~keep))
        at = np.flatnonzero(keep)
        seqs = np.asarray([rows[i][1] for i in at.tolist()], dtype=np.int64)
        return [rows[i] for i in at.tolist()], hashes[at], seqs
