"""benchmarks/inflight_bytes.py takes its spans through the real decode, handler and attributor: every
span a request in flight with a prefill and a decode row (cut when sealed), the sites holding it found."""

from __future__ import annotations

import time

from tests.benchmarks.bench_module import load_bench


def test_every_span_is_a_request_in_flight_of_two_rows_and_its_bytes_are_placed() -> None:
    bench = load_bench("inflight_bytes", "inflight_bytes_bench")
    exports = bench.build_exports(2)
    now_ns = time.time_ns()
    payloads = [exports[k % 2].stamped(now_ns, k * bench.EXPORT_SPANS) for k in range(2)]
    _, rows_made, in_flight, growth = bench.fresh_pipeline(payloads, trace=True)
    spans = 2 * bench.EXPORT_SPANS
    assert in_flight == spans  # none sealed, none refused
    assert rows_made == 2 * spans  # a prefill row and a decode row, which sealing cuts at each tick
    assert sum(size for _, size in growth) > 500 * spans  # ~1 KB a request: their state was traced
    pending = sum(size for site, size in growth if site.startswith("sidecar/attribution/intake.py:"))
    assert pending >= 60 * rows_made  # the pending rows, 64 B each, placed where the intake queues them


def test_the_counter_timeline_has_an_edge_every_update() -> None:
    bench = load_bench("inflight_bytes", "inflight_bytes_bench")
    timeline = bench.counter_timeline(100.0, 101.0)
    edges = timeline.edge_times_after(100.0)
    assert 8 <= edges.size <= 10  # one a 100 ms update, the first read only a base
    assert timeline.energy_j.tolist() == [500.0 * 0.1 * edges.size]
