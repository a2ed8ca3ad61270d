"""benchmarks/otlp_queue.py: every span of its exports waits in the real receiver's queue, and what the
queue holds per vLLM span stays compact (columns, not a decoded span with every attribute)."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

_BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    sys.path.insert(0, str(_BENCH))  # otlp_queue imports otlp_flood by name, as when run as a script
    spec = importlib.util.spec_from_file_location(name, _BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_queued_vllm_spans_cost_a_few_hundred_bytes_each_not_a_decoded_span() -> None:
    bench = _load("otlp_queue")
    flood = sys.modules["otlp_flood"]
    pool = flood.build_exports(2)
    exports = [pool[k % 2].stamped(time.time_ns(), k * flood.EXPORT_SPANS) for k in range(4)]
    alone = bench.queued_bytes_per_span(exports, remembered=1)  # raises unless every span was queued
    with_keys = bench.queued_bytes_per_span(exports, remembered=20_000)
    assert 0 < alone < with_keys < 700  # the whole decoded span was ~1,400 bytes with its key
