"""benchmarks/proxy_idle.py's baseline is what it says: it visits every live trace, and both books
make the same work."""

from __future__ import annotations

import pytest

from sidecar.proxy import work
from tests.benchmarks.bench_module import load_bench


def test_the_baseline_visits_every_live_trace_and_both_make_the_same_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = load_bench("proxy_idle")
    visits: list[int] = []
    real = work.TraceCursor.drain
    monkeypatch.setattr(work.TraceCursor, "drain", lambda c, *a: visits.append(1) or real(c, *a))
    _, base_events = bench.run(bench.SweepBook, 300, 5)
    base_visits = len(visits)
    visits.clear()
    _, now_events = bench.run(bench.TraceBook, 300, 5)
    assert base_events == now_events == 5 * (64 + 4)  # a tick: a token for each busy one, 4 new prefills
    first = 300 + 64  # the first tick looks at every stream in both
    assert base_visits == first + 5 * (300 + 64 + 4)  # every live one, each tick (the ended ones too)
    assert len(visits) == first + 5 * (64 + 4)  # the changed ones only: busy (ending ones included), new
