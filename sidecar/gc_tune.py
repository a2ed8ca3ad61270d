"""The cyclic garbage collector for a long-running sidecar: start-up objects frozen, fewer young passes.

Under a span flood the collector took a large share of the sidecar's CPU, most of it in full
collections (a one-off timing with ``gc.callbacks`` of the sidecar that
``benchmarks/ingest_grpc.py`` runs, on a shared machine, not a figure the benchmark prints:
~11 %, ~25 full passes of 46-86 ms). A full pass walks every tracked container, and the
sidecar's long-lived ones are large: the recent-id sets and deques (100,000 ids), the request
table's dicts, the task-wait tables, the modules and classes of gRPC, protobuf, NumPy and
OTel. They are made at start-up and live as long as the process, so :func:`tune_gc` moves
them to the permanent generation (``gc.freeze``) once the sidecar is built, and full passes
walk only what was made since. The young generation's threshold goes from 700 to 50,000
allocations (objects are mostly freed by reference counting, so a young pass finds little):
~130 young passes a second become ~1 (the same one-off timing then saw 20 young passes and
no full one).

Reference counting frees everything that is not in a cycle at once; only cyclic garbage waits a
little longer for a pass. Called by the sidecar's entry point (``jouletrace sidecar``) after the
sidecar is built, and by the benchmarks that run it; never by a library call (it changes the
whole process).
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLDS", "tune_gc"]

GC_THRESHOLDS = (50_000, 20, 10)  # young allocations, young passes per middle, middle per full


def tune_gc() -> None:
    """Freeze what exists now (the built sidecar) out of later passes and set :data:`GC_THRESHOLDS`."""
    gc.collect()  # start-up garbage is freed, not frozen
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
