"""The ledger's write of one batch: one transaction, every record stored or counted, then retention.

:class:`LedgerWrites` is the half of :class:`~sidecar.export.store.Ledger` that writes
(the ledger sets these attributes, and holds its lock around a write). The usual batch
(new ids, all storable) is one ``executemany`` of rows built from the records' values;
a batch with a stored id or a record SQLite refuses is written record by record, the
refused one skipped and counted (``unstorable``), one whose id is stored already kept out
(``duplicate_kept``: a final record is final; its id is listed in :attr:`kept_out`).
Retention deletes by age, then beyond ``max_rows`` the records of 0 J first (no measured energy:
a flood of requests that never worked must not push out measured records), then the oldest.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from itertools import repeat
from operator import itemgetter

from sidecar.attribution.record_batch import REQUEST_ID, Values
from sidecar.export import ledger_rows

__all__ = ["RECORD_ERRORS", "LedgerWrites", "transaction"]

log = logging.getLogger(__name__)

# What one record can make SQLite (or the binding of its values) refuse, as opposed to the store failing.
RECORD_ERRORS = (OverflowError, TypeError, ValueError, sqlite3.DataError, sqlite3.IntegrityError)
_BY_ID = itemgetter(0)  # a row's request_id (ledger_rows.COLUMNS)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Cursor]:
    """``BEGIN IMMEDIATE`` .. ``COMMIT`` on a connection in autocommit mode; on any failure rolled
    back (what the statements did goes with it) and raised."""
    cur = conn.cursor()
    cur.execute("BEGIN IMMEDIATE")
    try:
        yield cur
        cur.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            cur.execute("ROLLBACK")
        raise


class LedgerWrites:
    """Writes batches of final records' values; the ledger sets these attributes."""

    max_rows: int
    max_age_s: float
    counts: Counter[str]
    _clock: Callable[[], float]
    _conn: sqlite3.Connection
    _rows: int
    _seq: int
    _retained_at: float  # wall s of the last retention
    kept_out: list[str]  # the ids of the last write's records kept out: stored already

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """:func:`transaction` on the ledger's file; on a failure the row count and last ``seq`` are
        read again (what the failed statements had counted went with them)."""
        try:
            with transaction(self._conn) as cur:
                yield cur
        except BaseException:
            self._recount()
            raise

    def _recount(self) -> None:
        """The rows stored and the last ``seq``, as the file has them."""
        self._rows = self._conn.execute("SELECT count(*) FROM requests").fetchone()[0]
        self._seq = self._conn.execute("SELECT coalesce(max(seq), 0) FROM requests").fetchone()[0]

    def _write(self, batch: list[Values]) -> int:
        self.kept_out = []
        now = self._clock()
        with self._transaction() as cur:
            written = self._insert_new(cur, batch, now)
            if written is None:  # a stored id or an unstorable record in the batch: one at a time
                cur.execute("ROLLBACK")  # what the batch's insert did, all of it
                cur.execute("BEGIN IMMEDIATE")
                written = self._put_each(cur, batch, now)
            self._retain(cur, now)
        self.counts["stored"] += written
        return written

    def _insert_new(self, cur: sqlite3.Cursor, batch: list[Values], now: float) -> int | None:
        """The usual batch, all new ids and all storable, in one ``executemany``, the first thing in
        its transaction; None if any id is stored already or any record cannot be stored (the
        caller then rolls the transaction back). No savepoint around it: SQLite would copy every
        index page the batch touches to a statement journal first. The rows go in by id (their
        ``seq`` numbered in the batch's order first): each insert then lands in the id index at
        or after the last one, not at a random page. ``benchmarks/ledger_insert.py`` prints the
        same rows with a savepoint and in the batch's order."""
        try:
            rows = list(
                map(
                    ledger_rows.values_row,
                    batch,
                    range(self._seq + 1, self._seq + 1 + len(batch)),
                    repeat(now),
                )
            )
        except RECORD_ERRORS:
            return None
        with suppress(TypeError):  # ids that do not compare (one is not text): inserted in any order
            rows.sort(key=_BY_ID)
        try:
            cur.executemany(ledger_rows.INSERT, rows)
        except RECORD_ERRORS:
            return None
        if cur.rowcount != len(rows):  # a stored id: its row was left as it is
            return None
        self._seq += len(rows)
        self._rows += len(rows)
        return len(rows)

    def _put_each(self, cur: sqlite3.Cursor, batch: list[Values], now: float) -> int:
        """Insert record by record: a record whose id is stored is kept out, and one that cannot be
        stored is skipped, each counted."""
        written = 0
        for rec in batch:
            try:
                row = ledger_rows.values_row(rec, self._seq + 1, now)
                cur.execute(ledger_rows.INSERT, row)
                if cur.rowcount != 1:  # the id is stored (a NaN in a NOT NULL column raises instead)
                    self.counts["duplicate_kept"] += 1  # e.g. a request's span sent to a restarted sidecar
                    self.kept_out.append(rec[REQUEST_ID])
                    continue
            except RECORD_ERRORS as err:  # this record only; the statement changed nothing
                self.counts["unstorable"] += 1
                log.warning("ledger: record %r cannot be stored, skipped: %s", str(rec[REQUEST_ID])[:64], err)
                continue
            self._seq += 1
            self._rows += 1
            written += 1
        return written

    def _retain(self, cur: sqlite3.Cursor, now: float) -> None:
        self._retained_at = now
        cur.execute("DELETE FROM requests WHERE stored_unix_s < ?", (now - self.max_age_s,))
        self._rows -= cur.rowcount
        for which in ("WHERE energy_j = 0", ""):  # records with no measured energy go first
            if self._rows <= self.max_rows:
                break
            excess = self._rows - self.max_rows
            cur.execute(
                f"DELETE FROM requests WHERE seq IN (SELECT seq FROM requests {which} ORDER BY seq LIMIT ?)",
                (excess,),
            )
            self._rows -= cur.rowcount
