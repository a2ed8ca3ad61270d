"""CPU and memory per id of the two bounded id sets: the exact ring and the sorted generations.

:class:`sidecar.recent_ids.RecentIds` (an open-addressing table of hashes and an exact
first-in-first-out ring, stdlib only: the proxy's) and
:class:`sidecar.recent_ids_sorted.SortedRecentIds` (the newest generation's hashes in a set, the
older ones in a sorted array: the sidecar's span path) take the same ids, as random as vLLM's
``chatcmpl-<32 hex>``, through a table of ``--most``: each id looked up, then added (as the span
handler does a span's id), one at a time; then, for the sorted one, a batch of ``--batch`` at a time
(:meth:`~sidecar.recent_ids_sorted.SortedRecentIds.contains_many`, then
:meth:`~sidecar.recent_ids_sorted.SortedRecentIds.add_many`). Each figure is the thread's CPU time
per id over the last half of the run (the table full: every add forgets an id), hashing the fresh
id strings included; then the bytes each table holds once full (``tracemalloc``: what it
allocated and still holds, the ids themselves not counted).

Ends with one line ``sorted batch us per id N``.

    .venv/bin/python benchmarks/recent_ids.py [--ids 400000] [--most 100000] [--batch 512]
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.recent_ids import RecentIds
from sidecar.recent_ids_sorted import SortedRecentIds


def one_at_a_time(table: Any, ids: list[str]) -> float:
    """CPU s per id, last half: look up, then add."""
    half = len(ids) // 2
    for key in ids[:half]:
        if key not in table:
            table.add(key)
    t0 = time.thread_time()
    for key in ids[half:]:
        if key not in table:
            table.add(key)
    return (time.thread_time() - t0) / (len(ids) - half)


def in_batches(table: SortedRecentIds[str], ids: list[str], batch: int) -> float:
    """CPU s per id, last half: each batch looked up, then added."""
    half = len(ids) // 2 // batch * batch
    for i in range(0, half, batch):
        table.contains_many(ids[i : i + batch])
        table.add_many(ids[i : i + batch])
    t0 = time.thread_time()
    for i in range(half, len(ids), batch):
        table.contains_many(ids[i : i + batch])
        table.add_many(ids[i : i + batch])
    return (time.thread_time() - t0) / (len(ids) - half)


def held_bytes(make: Any, ids: list[str]) -> float:
    """Bytes a full table holds per id it remembers (ids allocated before tracing: not counted)."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    table = make()
    for key in ids:
        table.add(key)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held / len(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ids", type=int, default=400_000, help="distinct ids to send through")
    parser.add_argument("--most", type=int, default=100_000, help="the tables' size")
    parser.add_argument("--batch", type=int, default=512, help="ids a batch (an export's spans)")
    args = parser.parse_args()
    ids = [uuid.uuid4().hex for _ in range(args.ids)]
    for key in ids:
        hash(key)  # str caches its hash: each table meets ids as the span path does, hashed before
    ring = one_at_a_time(RecentIds(args.most), ids)
    single = one_at_a_time(SortedRecentIds(args.most), ids)
    batch = in_batches(SortedRecentIds(args.most), ids, args.batch)
    print(f"{args.ids:,} distinct ids through tables of {args.most:,}; CPU per id, the table full")
    print(f"  ring (RecentIds), one at a time:             {ring * 1e6:6.2f} us")
    print(f"  sorted (SortedRecentIds), one at a time:     {single * 1e6:6.2f} us")
    print(f"  sorted, batches of {args.batch}:                    {batch * 1e6:6.2f} us")
    ring_b = held_bytes(lambda: RecentIds(args.most), ids)
    sorted_b = held_bytes(lambda: SortedRecentIds(args.most), ids)
    print(f"  bytes held per id remembered: ring {ring_b:.1f}, sorted {sorted_b:.1f}")
    print(f"sorted batch us per id {batch * 1e6:.2f}")


if __name__ == "__main__":
    main()
