"""DueChecks gives, put for put and look-up for look-up, what the heap of (time, code) it replaced gave."""

from __future__ import annotations

import heapq
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.attribution.due_checks import DueChecks

_time = st.one_of(st.floats(-5.0, 50.0), st.sampled_from([-math.inf, math.inf, math.nan, 0.0, 7.5]))
_op = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 40), _time),
    st.tuples(st.just("end"), st.integers(0, 40), st.just(0.0)),  # the request ends (no longer live)
    st.tuples(st.just("due"), st.just(0), _time),
)


class _Heap:
    """The heap the request table kept before (its put, compaction and look-up, as they were)."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int]] = []

    def put(self, code: int, check_s: float) -> None:
        if check_s < math.inf:
            heapq.heappush(self.heap, (check_s, code))

    def due(self, until_s: float, live: set[int]) -> list[int]:
        found = set()
        while self.heap and self.heap[0][0] <= until_s:
            code = heapq.heappop(self.heap)[1]
            if code in live:
                found.add(code)
        return sorted(found)


@settings(max_examples=400, deadline=None)
@given(ops=st.lists(_op, max_size=60))
def test_due_checks_answer_as_the_heap(ops: list[tuple[str, int, float]]) -> None:
    checks, heap, live = DueChecks(), _Heap(), set(range(41))
    checks._compact_at = 8  # compactions happen within a short run too

    def is_live(codes: np.ndarray) -> np.ndarray:
        return np.array([c in live for c in codes.tolist()], dtype=bool)

    for op, code, t in ops:
        if op == "put" and code in live:
            assert checks.put(code, t) == (t < math.inf)
            heap.put(code, t)
            checks.compact(is_live, len(live))
        elif op == "end":
            live.discard(code)
        elif op == "due":
            checks.compact(is_live, len(live))
            assert checks.due(t, is_live) == heap.due(t, live)
        live_entries = sorted(e for e in heap.heap if e[1] in live)
        assert sorted(e for e in checks.entries() if e[1] in live) == live_entries
        assert len(checks) <= len(heap.heap)  # entries of ended requests dropped, never live ones


def test_entries_of_ended_requests_are_dropped_once_past_the_mark() -> None:
    checks, live = DueChecks(), set(range(100))
    for code in range(100):
        checks.put(code, 10.0)
    live -= set(range(90))

    def is_live(codes: np.ndarray) -> np.ndarray:
        return np.isin(codes, list(live))

    checks._compact_at = 50
    checks.compact(is_live, len(live))
    assert len(checks) == 10 and checks._compact_at == 4 * 10 + 1024
    assert checks.due(10.0, is_live) == list(range(90, 100))
    assert len(checks) == 0


@given(
    st.lists(st.tuples(st.integers(0, 9), st.sampled_from([1.0, 2.5, math.inf, math.nan, -3.0])), max_size=8)
)
def test_put_many_puts_what_put_of_each_puts(entries: list[tuple[int, float]]) -> None:
    one, many = DueChecks(), DueChecks()
    for code, at_s in entries:
        one.put(code, at_s)
    many.put_many([code for code, _ in entries], [at_s for _, at_s in entries])
    assert many.entries() == one.entries() and len(many) == sum(at_s < math.inf for _, at_s in entries)
