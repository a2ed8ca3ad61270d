"""How long the sidecar takes to move a schema 1 ledger to schema 2 when it opens it (an upgrade).

A ledger file as jouletrace wrote it before 2026-12-01 (schema 1: main numbers as columns, the
whole record as JSON, :data:`sidecar.export.ledger_migrate.SCHEMA_1`) is filled with ``--records``
final records (vLLM-like random ids, ``ledger_max_rows``' default: a ledger that has been running
a while) in batches of 10,000, then opened by :class:`~sidecar.export.store.Ledger`, which moves it
in one transaction before the sidecar answers ``/healthz``. Baseline in the same run: opening a
schema 2 ledger of the same records (nothing to move). Prints the file's size, the wall and CPU
seconds of each open, and ends with one line ``migrate s N`` (wall seconds of the move): how long
a sidecar on a kept ledger does not answer ``/healthz`` after an upgrade (docs/deploy.md).

    .venv/bin/python benchmarks/ledger_migrate.py [--records 1000000]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scratch import scratch_dir

from sidecar.attribution.record_batch import RecordBatch
from sidecar.export import ledger_migrate, ledger_rows
from sidecar.export.store import Ledger
from tests.sidecar.export.factories import make_record, schema_1_row

BATCH = 10_000
INSERT_1 = f"INSERT INTO requests VALUES ({','.join('?' * 18)})"


def batches(records: int) -> list[tuple[int, RecordBatch]]:
    """(first seq, records) in batches of :data:`BATCH`, ids as random as vLLM's."""
    return [
        (
            start,
            RecordBatch.of(
                make_record(
                    request_id=f"chatcmpl-{uuid.uuid4().hex}", attributes={"trace_id": uuid.uuid4().hex}
                )
                for _ in range(min(BATCH, records - start))
            ),
        )
        for start in range(0, records, BATCH)
    ]


def schema_1_file(path: Path, parts: list[tuple[int, RecordBatch]]) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(ledger_migrate.SCHEMA_1 + ledger_rows.SCHEMA + "PRAGMA user_version=1;")
        conn.execute("PRAGMA journal_mode=WAL")
        for start, part in parts:
            rows = (schema_1_row(v, start + i + 1, 1.7e9 + start + i) for i, v in enumerate(part.values))
            conn.executemany(INSERT_1, rows)
    conn.close()


def timed_open(path: Path) -> tuple[float, float, int]:
    """(wall s, CPU s, records) of opening ``path`` as the sidecar does."""
    t0, c0 = time.perf_counter(), time.process_time()
    with Ledger(path) as ledger:
        wall_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        return wall_s, cpu_s, ledger.count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the old ledger")
    args = parser.parse_args()
    parts = batches(args.records)
    with scratch_dir("jt-ledger-migrate-") as tmp:
        old, new = tmp / "schema1.db", tmp / "schema2.db"
        schema_1_file(old, parts)
        with Ledger(new) as ledger:
            for _, part in parts:
                ledger.put_many(part)
        size_mb = old.stat().st_size / 1e6
        base_wall, base_cpu, base_n = timed_open(new)
        wall_s, cpu_s, n = timed_open(old)
        moved_mb = old.stat().st_size / 1e6
    print(f"{args.records} records; schema 1 file {size_mb:.0f} MB, {moved_mb:.0f} MB after the move")
    print(
        f"baseline (a schema 2 ledger opened): {base_wall:7.2f} s wall {base_cpu:7.2f} s CPU {base_n} records"
    )
    print(f"schema 1 moved to schema 2 on open:  {wall_s:7.2f} s wall {cpu_s:7.2f} s CPU {n} records")
    print(f"migrate s {wall_s:.1f}")


if __name__ == "__main__":
    main()
