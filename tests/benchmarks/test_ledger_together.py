"""benchmarks/ledger_together.py compares what it says: both ways store every record handed to them,
the one written together in about one write a second, the other in one a tick."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.benchmarks.bench_module import load_bench


def test_both_ways_store_every_record_and_together_writes_once_a_second(tmp_path: Path) -> None:
    bench = load_bench("ledger_together", "ledger_together_bench")
    result = bench.run_rate(tmp_path, rate=50, seconds=3.0, stored=100)
    (tick_us, _, tick_commits), (together_us, _, together_commits) = result.values()
    assert tick_commits == 10.0  # a write each tick of 0.1 s
    assert together_commits <= 4 / 3.0  # the first put, then one a second (and the stop's)
    assert tick_us > 0 and together_us > 0
    for name in ("tick", "together"):
        with sqlite3.connect(tmp_path / f"{name}-50.db") as conn:
            assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 100 + 50 * 3
