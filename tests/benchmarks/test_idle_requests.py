"""benchmarks/idle_requests.py runs both ways, and both finalize the same requests: the baseline (every
live request looked at each tick) overrides the attributor's finalize pass, so it must keep the pass's
signature (a change of that signature once left the benchmark failing at its first tick)."""

from __future__ import annotations

from sidecar.attribution.engine import Attributor
from tests.benchmarks.bench_module import load_bench


def test_the_scan_and_the_due_checks_finalize_the_same_requests() -> None:
    bench = load_bench("idle_requests")
    (scan_s, scan_done), (due_s, due_done) = (
        bench.run(kind, 50, 10) for kind in (bench.ScanAttributor, Attributor)
    )
    assert scan_done == due_done > 0 and scan_s >= 0.0 and due_s >= 0.0
