"""benchmarks/seal_rows.py's two ways of adding a tick's rows to the request table leave the same
sums (the benchmark refuses to print otherwise), on the table as it is now: its "before" way reads a
code -> row dict made from the table once (the table kept one then; once taken out of the table, the
benchmark failed before its first tick)."""

from __future__ import annotations

from functools import partial

import numpy as np

from tests.benchmarks.bench_module import load_bench


def test_before_and_now_leave_the_same_sums() -> None:
    bench = load_bench("seal_rows")
    ticks = bench.ticks_of(3, 300, 250, 600, seed=2)
    before, now = bench.table_of(600), bench.table_of(600)
    before_way = partial(bench.add_before, slots_by_code=bench.slot_map(before))
    assert bench.timed(before_way, before, ticks) > 0 and bench.timed(bench.add_now, now, ticks) > 0
    for name in before._sums._FIELDS:
        assert np.allclose(getattr(before._sums, name), getattr(now._sums, name), rtol=1e-12, atol=0.0), name
    assert bench.checks_before(200, 20, 3) > 0 and bench.checks_now(200, 20, 3) > 0
