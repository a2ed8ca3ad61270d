"""The ledger: finished request energy records in one SQLite file (WAL).

One table, ``requests``, keyed by request id: a record's fields are its columns (so the
file can be queried with ``sqlite3``), its dicts one JSON text (:mod:`.ledger_rows`);
:meth:`Ledger.get` returns the record as :meth:`RequestEnergy.to_json` gives it. A file
of an older schema is moved to this one when opened (:mod:`.ledger_migrate`).

Retention runs on every :meth:`Ledger.put_many`: records stored more than
``max_age_s`` seconds ago (by the injected wall ``clock``, seconds since the
epoch) are deleted, then the oldest beyond ``max_rows``; and by age from
:meth:`Ledger.expire` (the sidecar's tick) once :data:`EXPIRE_EVERY_S` passed without
a write, so a sidecar that no longer gets traffic still deletes what is too old. A
final record is final: a record whose id is stored already is kept out and counted
(``duplicate_kept``; :meth:`Ledger.put_new` says which), so a request's span sent
again to a restarted sidecar (which never saw its work, or saw part of it) cannot turn
its measured record into a 0 J or partial one, nor a datagram or span that reuses the
id replace it. One process writes a ledger file (the sidecar's, opened ``exclusive``, holds a lock
beside it: :mod:`.ledger_lock`); reads and writes are thread-safe.

Faults never cost good records: a record that cannot be stored (an integer
too large for SQLite, a value it refuses) is skipped and counted
(``unstorable``) and the rest of its batch is written; when the write itself
fails (disk full, I/O error, a damaged file: any ``sqlite3.DatabaseError`` from the
write) the batch is kept in memory (at most
``max_pending`` records, the oldest dropped and counted as ``dropped``), still
served by :meth:`Ledger.get`, counted (``write_errors``) and written with the
next batch once the disk has room again, or by :meth:`Ledger.flush` (the sidecar's
tick when no batch comes, at most every :data:`RETRY_EVERY_S`, and its stop).
:attr:`Ledger.counts` holds these counters for the self-metrics.

Written together (``write_every_s``, the sidecar's ``ledger_write_every_s``): final records handed
to :meth:`Ledger.put_new` wait in memory (served by :meth:`Ledger.get` and :meth:`Ledger.recent`)
until ``write_every_s`` has passed since the last write (on the caller's clock), :data:`WRITE_ROWS`
wait, or the caller forces it (the stop; :meth:`Ledger.close` too); one write then takes them all
and :meth:`Ledger.put_new` returns them, less those kept out, for the caller to count: a record
whose id is stored is still counted once. Each record's random id lands on its own page of the id
index and a commit writes every page it changed, so one write of a second's records writes fewer
bytes a record than one a tick, and commits once a second instead of ten times
(``benchmarks/ledger_together.py``). What waits is lost if the process is killed (not stopped).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from sidecar.attribution.record_batch import (
    REQUEST_ID,
    TASK,
    Values,
    replaced,
    to_json,
)
from sidecar.errors import ConfigError
from sidecar.export import ledger_migrate, ledger_rows
from sidecar.export.ledger_lock import LedgerLock
from sidecar.export.ledger_rows import SCHEMA_VERSION
from sidecar.export.ledger_write import RETRY_EVERY_S, WRITE_ROWS, LedgerWrites

__all__ = ["RETRY_EVERY_S", "SCHEMA_VERSION", "WRITE_ROWS", "Ledger"]

log = logging.getLogger(__name__)

# Pages the WAL may hold before a commit copies them into the file (SQLite's default: 1,000). A
# random-id index page is touched again by many batches; copied once per 10,000 pages instead of
# per 1,000, the ledger costs less CPU a record (benchmarks/ledger_insert.py prints both), for a
# WAL file of ~40 MB on disk beside the ledger instead of ~4 MB.
WAL_CHECKPOINT_PAGES = 10_000
EXPIRE_EVERY_S = 60.0  # retention by age runs at least this often (s), written to or not
# how long a write waits for another connection's lock (a backup, an operator's shell) before it
# fails and its records are kept for the next try: the tick waits on the event loop meanwhile
BUSY_TIMEOUT_S = 0.5


class Ledger(LedgerWrites):
    """SQLite store of final :class:`RequestEnergy` records, with retention.

    ``path`` is a file path or ``":memory:"``. ``max_rows`` bounds the rows kept;
    ``max_age_s`` (seconds) bounds how long a record is kept after it was stored;
    ``clock`` returns wall-clock seconds since the epoch. A path that cannot be
    opened as a ledger raises :class:`ConfigError` naming ``ledger_path``.
    """

    def __init__(
        self,
        path: str | Path,
        max_rows: int = 1_000_000,
        max_age_s: float = 7 * 86400,
        clock: Callable[[], float] = time.time,
        max_pending: int = 100_000,
        exclusive: bool = False,
        write_every_s: float = 0.0,
    ) -> None:
        if max_rows < 1:
            raise ConfigError(f"ledger_max_rows: must be at least 1, got {max_rows}")
        if not max_age_s > 0:
            raise ConfigError(f"ledger_max_age_s: must be positive seconds, got {max_age_s}")
        self.path = str(path)
        self.max_rows = max_rows
        self.max_age_s = float(max_age_s)
        self._clock = clock
        self.max_pending = max_pending
        self.write_every_s = write_every_s  # 0: put_new writes at once
        self._staged: OrderedDict[str, Values] = OrderedDict()  # final, waiting to be written together
        self._written_s = -math.inf  # the caller's clock at the last write put_new made
        self.counts: Counter[str] = Counter()  # stored, unstorable, write_errors, dropped, task_late
        self._pending: OrderedDict[str, Values] = OrderedDict()  # not yet written (disk full)
        self._lock = threading.RLock()  # put_new holds it around put_many
        # the sidecar's own ledger (exclusive): no second sidecar may write the file (ledger_lock.py)
        self._file_lock = LedgerLock(self.path) if exclusive and self.path != ":memory:" else None
        try:
            self._conn = self._open(self.path)
        except ConfigError:
            self.release_file()
            raise
        self._rows, self._seq = 0, 0
        self._recount()
        self._retained_at = -math.inf  # wall s of the last retention (each write runs one)
        self._tried_at = -math.inf  # wall s of the last write tried
        self.kept_out = []

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False
            )
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"ledger_path: {path!r} has ledger schema {version}, newer than this jouletrace "
                    f"({SCHEMA_VERSION}); use a new file or upgrade jouletrace"
                )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            ledger_migrate.migrate(conn, path)
            conn.executescript(ledger_rows.SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            return conn
        except sqlite3.Error as err:
            if conn is not None:
                conn.close()
            raise ConfigError(
                f"ledger_path: cannot use {path!r} as the SQLite ledger ({err}); "
                "point ledger_path at a writable file (or '' to keep no ledger)"
            ) from err
        except ConfigError:
            if conn is not None:
                conn.close()
            raise

    @property
    def journal_mode(self) -> str:
        """SQLite's journal mode: ``wal`` for a file, ``memory`` for ``":memory:"``."""
        with self._lock:
            mode: str = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
        return mode

    def expire(self) -> int:
        """Delete the records older than ``max_age_s`` if no retention ran for :data:`EXPIRE_EVERY_S`
        (each write runs one); how many were deleted. A failure is a counted write error."""
        with self._lock:
            now = self._clock()
            if now - self._retained_at < EXPIRE_EVERY_S:
                return 0
            rows = self._rows
            try:
                with self._transaction() as cur:
                    self._retain(cur, now)
            except sqlite3.ProgrammingError:
                raise
            except sqlite3.DatabaseError as err:  # locked, I/O, a damaged file: try again later
                self._retained_at = now
                self.counts["write_errors"] += 1
                log.warning("ledger: retention by age failed: %s", err)
                return 0
            return rows - self._rows

    def set_tasks(self, tasks: dict[str, str]) -> int:
        """Name the task of stored records whose task is ``"unknown"`` (id -> task); returns how many.

        A task named after the record was final (a late client span). A known task is never
        replaced, energy and the other fields stay; unknown ids are skipped. A failed write is
        counted (``write_errors``) and the labels are lost, never the records.
        """
        updated: set[str] = set()  # by id: one both waiting and stored (kept out when written) once
        with self._lock:
            for request_id, task in tasks.items():
                for kept in (self._staged, self._pending):
                    rec = kept.get(request_id)
                    if rec is not None and rec[TASK] == "unknown":
                        kept[request_id] = replaced(rec, "task", task)
                        updated.add(request_id)
            try:
                updated |= self._set_tasks(tasks)
            except sqlite3.ProgrammingError:
                raise
            except sqlite3.DatabaseError as err:
                self.counts["write_errors"] += 1
                log.warning("ledger: setting %d late task(s) failed: %s", len(tasks), err)
        self.counts["task_late"] += len(updated)
        return len(updated)

    def _set_tasks(self, tasks: dict[str, str]) -> set[str]:
        """The ids of stored records whose task was set."""
        updated = set()
        with self._transaction() as cur:
            for request_id, task in tasks.items():
                cur.execute(
                    "UPDATE requests SET task = ? WHERE request_id = ? AND task = 'unknown'",
                    (task, request_id),
                )
                if cur.rowcount:
                    updated.add(request_id)
        return updated

    def get(self, request_id: str) -> dict[str, Any] | None:
        """The stored record (``RequestEnergy.to_json()`` form), else one waiting to be written, else
        ``None``. A stored record is final: one waiting under its id (a span sent again to a restarted
        sidecar) is kept out when written, and never served over it."""
        with self._lock:
            waiting = self._staged.get(request_id) or self._pending.get(request_id)
            try:
                query = f"{ledger_rows.SELECT} WHERE request_id = ?"
                row = self._conn.execute(query, (request_id,)).fetchone()
            except sqlite3.DatabaseError:  # a damaged file: what waits is still served
                if waiting is None:
                    raise
                row = None
        if row is not None:
            return ledger_rows.record(row)
        return None if waiting is None else to_json(waiting)

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """Up to ``limit`` records, most recently stored first (those waiting to be written first)."""
        limit = max(0, limit)
        with self._lock:
            waiting = [rec for rec in reversed(self._staged.values())][:limit]
            if waiting:  # one under an id stored already is kept out when written: not listed
                stored = set(self._stored_of(waiting))
                waiting = [rec for rec in waiting if rec[REQUEST_ID] not in stored]
            rows = self._conn.execute(
                f"{ledger_rows.SELECT} ORDER BY seq DESC LIMIT ?", (limit - len(waiting),)
            ).fetchall()
        return [to_json(rec) for rec in waiting] + [ledger_rows.record(r) for r in rows]

    def save_state(self, key: str, value: dict[str, Any]) -> bool:
        """Keep a small named state (JSON-able) across restarts, replacing the last one; False where
        the file refused it (locked, full, damaged: counted ``write_errors``; the caller tries again).
        It raised, inside the tick: a backup holding the file failed every tick and made the sidecar
        unready."""
        text = json.dumps(value, separators=(",", ":"))
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO state (key, stored_unix_s, value_json) VALUES (?, ?, ?)",
                    (key, self._clock(), text),
                )
            except sqlite3.ProgrammingError:
                raise
            except sqlite3.DatabaseError as err:
                self.counts["write_errors"] += 1
                log.warning("ledger: saving the %s failed: %s", key, err)
                return False
        return True

    def load_state(self, key: str) -> dict[str, Any] | None:
        """The state saved under ``key``, or None."""
        with self._lock:
            row = self._conn.execute("SELECT value_json FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else ledger_rows.load(row[0])

    def count(self) -> int:
        """Rows in the ledger now."""
        with self._lock:
            n: int = self._conn.execute("SELECT count(*) FROM requests").fetchone()[0]
        return n

    def close(self) -> None:
        """Write what waits (if the file takes it), then close the database (idempotent); later
        calls raise ``sqlite3.ProgrammingError``."""
        with self._lock:
            if self._staged or self._pending:  # to be written together, or a failed write's
                with suppress(sqlite3.ProgrammingError):  # closed already
                    self.flush(force=True)
            self._conn.close()
        self.release_file()

    def release_file(self) -> None:
        """Let another sidecar open the file (an ``exclusive`` ledger's lock; idempotent)."""
        if self._file_lock is not None:
            self._file_lock.release()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
