"""The ledger's writes: records put, written together or at once, a batch in one transaction, retention.

:class:`LedgerWrites` is the half of :class:`~sidecar.export.store.Ledger` that writes
(the ledger sets these attributes, and holds its lock around a write): :meth:`put_new`,
:meth:`put_many`, :meth:`flush` and what they share (the module docstring of
:mod:`~sidecar.export.store` says when records wait and are written). The usual batch
(new ids, all storable) is one ``executemany`` of rows built from the records' values;
a batch with a stored id or a record SQLite refuses is written record by record, the
refused one skipped and counted (``unstorable``), one whose id is stored already kept out
(``duplicate_kept``: a final record is final; its id is listed in :attr:`kept_out`).
Retention deletes by age, then beyond ``max_rows`` the records of 0 J first (no measured energy:
a flood of requests that never worked must not push out measured records), then the oldest.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress

from sidecar.attribution.record_batch import FINAL, REQUEST_ID, RecordBatch, Values
from sidecar.attribution.records import RequestEnergy
from sidecar.export import ledger_rows

__all__ = ["RECORD_ERRORS", "STORED_OF", "LedgerWrites", "transaction"]

log = logging.getLogger(__name__)

# What one record can make SQLite (or the binding of its values) refuse, as opposed to the store failing.
RECORD_ERRORS = (OverflowError, TypeError, ValueError, sqlite3.DataError, sqlite3.IntegrityError)
WRITE_ROWS = 4096  # written together: a write once this many wait, however soon (~1.2 KB of memory each)
# which of some ids (a JSON array) the file holds
STORED_OF = "SELECT request_id FROM requests WHERE request_id IN (SELECT value FROM json_each(?))"
RETRY_EVERY_S = 1.0  # records kept back by a failed write are tried again this often (s) with no batch


def _final_only(batch: list[Values]) -> None:
    """Raise ``ValueError`` if a record is not final (a caller's bug: nothing of the batch is kept)."""
    for rec in batch:
        if not rec[FINAL]:
            raise ValueError(f"ledger stores final records only; {rec[REQUEST_ID]!r} is not final")


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
    max_pending: int
    write_every_s: float  # 0: put_new writes at once
    _lock: threading.RLock
    _pending: OrderedDict[str, Values]  # not written yet: a failed write's (disk full, locked)
    _staged: OrderedDict[str, Values]  # final, waiting to be written together
    _written_s: float  # the caller's clock at the last write put_new made
    _tried_at: float  # wall s of the last write tried
    _failing_since: float | None = None  # wall s of the first of the writes that failed in a row

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

    def put_new(
        self, records: Iterable[RequestEnergy], *, now_s: float | None = None, force: bool = False
    ) -> RecordBatch:
        """:meth:`put_many`; returns the records not kept out for an id stored already (all of them
        when the write failed: they are kept to be written later). With ``write_every_s`` the
        records wait instead (an empty batch is returned) until that long has passed since the last
        write by ``now_s`` (the caller's clock, else the ledger's), :data:`WRITE_ROWS` wait, or
        ``force``; the write then takes every record waiting, and returns them."""
        now = self._clock() if now_s is None else now_s
        with self._lock:  # one write and its kept_out together
            self._stage(RecordBatch.of(records).values)
            due = force or now - self._written_s >= self.write_every_s or len(self._staged) >= WRITE_ROWS
            if not due or not self._staged:
                return RecordBatch()
            batch = RecordBatch(list(self._staged.values()))
            self._staged.clear()
            self._written_s = now
            self._put_final(batch.values)  # checked final as they were staged
            if not self.kept_out:
                return batch
            out = set(self.kept_out)
        return RecordBatch([v for v in batch.values if v[REQUEST_ID] not in out])

    def put_many(self, records: Iterable[RequestEnergy]) -> int:
        """Insert final records in one transaction, then apply retention; a record whose id is
        stored already is kept out (counted ``duplicate_kept``, listed in :attr:`kept_out`).

        Returns how many records were written now (records kept back earlier
        because the write failed are written first). A record that cannot be
        stored is skipped and counted; a failed write keeps the batch pending
        (see the module docstring). A record with ``final=False`` raises
        ``ValueError`` (nothing of the batch is written): that is a caller's bug.
        """
        batch = RecordBatch.of(records).values  # rows of values: no record object needed
        _final_only(batch)
        return self._put_final(batch)

    def _put_final(self, batch: list[Values]) -> int:
        """:meth:`put_many` of records known to be final."""
        with self._lock:
            pending, done = self._pending, False
            if not pending:  # the usual case: nothing kept back from a failed write, ids unique
                pending.update((rec[REQUEST_ID], rec) for rec in batch)
                done = len(pending) == len(batch)
                if not done:  # an id twice: each put moves it last, as below
                    pending.clear()
            if not done:
                for rec in batch:
                    pending.pop(rec[REQUEST_ID], None)
                    pending[rec[REQUEST_ID]] = rec
            todo = list(self._pending.values())
            self._tried_at = self._clock()
            try:
                written = self._write(todo)
            except sqlite3.ProgrammingError:  # a closed connection, a bug: not the disk
                raise
            except sqlite3.DatabaseError as err:  # disk full, I/O error, locked, a damaged file: keep, retry
                self.kept_out = self._stored_of(todo)  # rolled back; those stored already are still out
                for request_id in self.kept_out:
                    del self._pending[request_id]
                self.counts["duplicate_kept"] += len(self.kept_out)
                self.counts["write_errors"] += 1
                log.warning("ledger write of %d record(s) failed, kept in memory: %s", len(todo), err)
                while len(self._pending) > self.max_pending:
                    self._pending.popitem(last=False)
                    self.counts["dropped"] += 1
                if not self._pending:  # none kept (all stored already): no retry comes to end the run
                    self._failing_since = None
                elif self._failing_since is None:
                    self._failing_since = self._tried_at
                return 0
            self._pending.clear()
            self._failing_since = None
        return written

    def failing_s(self) -> float:
        """How long writes of records have failed in a row, by the ledger's clock: since the first
        of them (records kept back are tried again every :data:`RETRY_EVERY_S`); 0 once one went
        through. Read without the lock (a write holds it through a wait for another's lock)."""
        since = self._failing_since
        return 0.0 if since is None else max(0.0, self._clock() - since)

    def _stored_of(self, batch: list[Values]) -> list[str]:
        """The ids of ``batch`` stored already, as a read can tell where the write failed (another
        connection's lock, a full disk); none where the read fails too. A record whose id is stored
        is kept out whether or not the write went through: the caller counts what is not kept out
        now (a failed write returned all, and one stored before a restart was counted twice)."""
        try:
            ids = json.dumps([rec[REQUEST_ID] for rec in batch])
            return [row[0] for row in self._conn.execute(STORED_OF, (ids,))]
        except (sqlite3.DatabaseError, TypeError, ValueError):
            return []

    def _stage(self, batch: list[Values]) -> None:
        """Keep final records to be written together (the first record of an id: one waiting already,
        or kept by a failed write, keeps a later one out, counted ``duplicate_kept``); a record not
        final raises, none kept."""
        _final_only(batch)
        staged, pending = self._staged, self._pending
        for rec in batch:
            if rec[REQUEST_ID] in staged or rec[REQUEST_ID] in pending:
                self.counts["duplicate_kept"] += 1
            else:
                staged[rec[REQUEST_ID]] = rec

    @property
    def waiting(self) -> int:
        """Final records in memory, not written yet (to be written together, or a failed write's)."""
        with self._lock:
            return len(self._staged) + len(self._pending)

    def flush(self, *, force: bool = False) -> int:
        """Write the records kept back by a failed write, if any, and if :data:`RETRY_EVERY_S` passed
        since the last try (``force``: now, e.g. at the stop); how many were written."""
        with self._lock:
            if force and self._staged:  # the stop with no tick to write them: stored, not counted
                self._pending.update(self._staged)
                self._staged.clear()
            if not self._pending or (not force and self._clock() - self._tried_at < RETRY_EVERY_S):
                return 0
            return self._put_final([])

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
        n, first_seq = len(batch), self._seq + 1
        order: Iterable[int] = range(n)
        with suppress(TypeError):  # ids that do not compare (one is not text): inserted in any order
            order = sorted(order, key=[rec[REQUEST_ID] for rec in batch].__getitem__)
        # each row built as SQLite takes it (a batch's rows are not all held at once); a record
        # SQLite or values_row refuses raises out of executemany, as a refused row would
        rows = (ledger_rows.values_row(batch[i], first_seq + i, now) for i in order)
        try:
            cur.executemany(ledger_rows.INSERT, rows)
        except RECORD_ERRORS:
            return None
        if cur.rowcount != n:  # a stored id: its row was left as it is
            return None
        self._seq += n
        self._rows += n
        return n

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
