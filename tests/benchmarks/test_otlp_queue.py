"""benchmarks/otlp_queue.py: every span of its exports waits in the real receiver's queue, and what the
queue holds per vLLM span stays compact (columns, not a decoded span with every attribute)."""

from __future__ import annotations

import sys
import time

from tests.benchmarks.bench_module import load_bench


def test_queued_vllm_spans_cost_a_few_hundred_bytes_each_not_a_decoded_span() -> None:
    bench = load_bench("otlp_queue")
    flood = sys.modules["otlp_flood"]
    pool = flood.build_exports(2)
    exports = [pool[k % 2].stamped(time.time_ns(), k * flood.EXPORT_SPANS) for k in range(4)]
    alone = bench.queued_bytes_per_span(exports, remembered=1)  # raises unless every span was queued
    with_keys = bench.queued_bytes_per_span(exports, remembered=20_000)
    assert 0 < alone < with_keys < 700  # the whole decoded span was ~1,400 bytes with its key
