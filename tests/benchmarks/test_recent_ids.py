"""benchmarks/recent_ids.py compares what it says: the ring and the sorted table, one id at a time
and in batches, are given the same ids and end remembering the same recent ones."""

from __future__ import annotations

from sidecar.recent_ids import RecentIds
from sidecar.recent_ids_sorted import SortedRecentIds
from tests.benchmarks.bench_module import load_bench


def test_every_way_takes_the_same_ids_and_remembers_the_last_most() -> None:
    bench = load_bench("recent_ids")
    ids = [f"chatcmpl-{i:032x}" for i in range(5_000)]
    ring, single, batched = RecentIds[str](1_000), SortedRecentIds[str](1_000), SortedRecentIds[str](1_000)
    figures = [
        bench.one_at_a_time(ring, ids),
        bench.one_at_a_time(single, ids),
        bench.in_batches(batched, ids, 64),
    ]
    assert all(f > 0 for f in figures)
    for table in (ring, single, batched):
        assert all(k in table for k in ids[-1_000:]) and not any(k in table for k in ids[:3_000])
    assert 1_000 <= len(single) < 1_250 and len(ring) == 1_000
    assert bench.held_bytes(lambda: SortedRecentIds[str](1_000), ids) > 0
