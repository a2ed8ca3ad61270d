"""benchmarks/stage_cpu.py: a stage's CPU is its own, without the stages it calls; the lines add up."""

from __future__ import annotations

import threading
from pathlib import Path

from sidecar.export.store import Ledger
from tests.benchmarks.bench_module import load_bench
from tests.sidecar.export.factories import make_record


def _burn(n: int) -> int:
    return sum(i * i for i in range(n))


def test_a_stage_called_inside_another_is_taken_out_of_the_outer_one() -> None:
    bench = load_bench("stage_cpu", "stage_cpu_bench")
    clock = bench.StageCpu()
    outer_name, inner_name = bench.STAGES[0][0], bench.STAGES[1][0]
    inner = clock.timed(inner_name, lambda: _burn(400_000))
    outer = clock.timed(outer_name, lambda: (_burn(40_000), inner())[1])
    clock.reset()
    outer()
    worker = threading.Thread(target=inner)  # another thread: its own stack of open calls
    worker.start()
    worker.join()
    own_outer, own_inner = clock.seconds[outer_name], clock.seconds[inner_name]
    assert 0 < own_outer < own_inner / 3  # the outer call's own tenth, not the inner call's CPU too
    assert all(s == 0.0 for name, s in clock.seconds.items() if name not in (outer_name, inner_name))


def test_the_lines_name_every_stage_the_rest_and_the_total_per_span() -> None:
    bench = load_bench("stage_cpu", "stage_cpu_bench")
    clock = bench.StageCpu()
    clock.timed(bench.STAGES[2][0], lambda: _burn(100_000))()
    lines = clock.lines(spans=1000)
    assert len(lines) == len(bench.STAGES) + 2
    assert all(name in line for (name, _, _), line in zip(bench.STAGES, lines, strict=False))
    assert lines[-2].strip().startswith("the rest of the process") and "total" in lines[-1]
    assert "us" in lines[-1] and "20 us" in lines[-1]


def test_the_ledger_stage_times_the_write_a_tick_makes(tmp_path: Path) -> None:
    """The tick puts final records with ``put_new`` (written together); the stage once wrapped only
    ``put_many``, which the tick no longer calls, and ``ingest_grpc.py`` printed ledger 0.0 us."""
    import importlib

    bench = load_bench("stage_cpu", "stage_cpu_bench")
    originals = []
    for _, where, methods in bench.STAGES:
        module, cls_name = where.split(":")
        cls = getattr(importlib.import_module(module), cls_name)
        for method in (methods,) if isinstance(methods, str) else methods:
            originals.append((cls, method, cls.__dict__.get(method)))
    try:
        clock = bench.instrument()
        ledger = Ledger(tmp_path / "ledger.db", write_every_s=1.0)
        ledger.put_new([make_record(request_id=f"r{i}") for i in range(500)], now_s=10.0, force=False)
        ledger.flush(force=True)
        ledger.close()
    finally:
        for cls, method, original in originals:
            if original is None:
                delattr(cls, method)  # inherited: the wrapper was set on the class itself
            else:
                setattr(cls, method, original)
    assert clock.seconds["ledger (rows, JSON, SQLite)"] > 0
