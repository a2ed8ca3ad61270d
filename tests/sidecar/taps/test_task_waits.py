"""Request spans waiting for a client span, as arrays: against a plain list of every span ever added."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.taps import task_waits
from sidecar.taps.task_waits import WaitingSpans


@dataclass
class Entry:
    trace: str
    request_id: str
    generation: int
    waiting: bool = True


class Model:
    """The same rules over a list: sealed together within SEAL_EVERY_S or SEAL_ROWS, a generation
    expires by its last span, the oldest waiting spans evicted first down to most - most // 8."""

    def __init__(self, most: int) -> None:
        self.most, self.entries, self.last_s = most, list[Entry](), dict[int, float]()
        self.generation, self.first_s, self.open_n = 0, 0.0, 0

    def add(self, pairs: list[tuple[str, str]], handled_s: float) -> int:
        if self.open_n and (
            self.open_n >= task_waits.SEAL_ROWS or handled_s - self.first_s >= task_waits.SEAL_EVERY_S
        ):
            self.generation, self.open_n = self.generation + 1, 0
        if not self.open_n:
            self.first_s = handled_s
        self.open_n += len(pairs)
        self.entries += [Entry(trace, request_id, self.generation) for trace, request_id in pairs]
        self.last_s[self.generation] = max(self.last_s.get(self.generation, handled_s), handled_s)
        waiting = [e for e in self.entries if e.waiting]
        if len(waiting) <= self.most:
            return 0
        gone = waiting[: len(waiting) - (self.most - self.most // 8)]
        for e in gone:
            e.waiting = False
        self.generation, self.open_n = self.generation + 1, 0  # evicting seals
        return len(gone)

    def take(self, trace: str) -> list[str]:
        taken = [e for e in self.entries if e.waiting and e.trace == trace]
        for e in taken:
            e.waiting = False
        return [e.request_id for e in taken]

    def expire(self, oldest_kept_s: float) -> int:
        gone = [e for e in self.entries if e.waiting and self.last_s[e.generation] < oldest_kept_s]
        for e in gone:
            e.waiting = False
        if self.open_n and self.last_s[self.generation] < oldest_kept_s:
            self.generation, self.open_n = self.generation + 1, 0
        return len(gone)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 5), st.floats(0.0, 3.0)),
        st.tuples(st.just("add_many"), st.integers(0, 5), st.floats(0.0, 3.0)),
        st.tuples(st.just("take"), st.integers(0, 5), st.just(0.0)),
        st.tuples(st.just("expire"), st.just(0), st.floats(0.0, 3.0)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, most=st.integers(1, 12))
def test_waiting_spans_take_expire_and_evict_as_a_plain_list_would(
    ops: list[tuple[str, int, float]], most: int
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task_waits, "SEAL_ROWS", 3)
        waits, model, clock_s, n = WaitingSpans(most), Model(most), 0.0, 0
        for op, trace_no, dt_s in ops:
            trace = f"trace-{trace_no}"
            if op in ("add", "add_many"):
                clock_s += dt_s
                k = 1 if op == "add" else trace_no % 3  # a batch of 0 to 2, traces in turn
                pairs = [(f"trace-{(trace_no + j) % 6}", f"r{n + j}") for j in range(k)]
                n += k
                if op == "add":
                    got = waits.add(*pairs[0], clock_s)
                else:
                    got = waits.add_many([t for t, _ in pairs], [r for _, r in pairs], clock_s)
                assert got == (model.add(pairs, clock_s) if pairs else 0)
            elif op == "take":
                assert waits.take(trace) == model.take(trace)
            else:
                assert waits.expire(clock_s - dt_s) == model.expire(clock_s - dt_s)
            assert len(waits) == sum(e.waiting for e in model.entries) <= most


def test_a_join_names_a_traces_spans_from_every_generation_in_the_order_handled() -> None:
    waits = WaitingSpans(100)
    waits.add("t", "first", 0.0)
    waits.add("u", "other", 0.5)
    waits.add("t", "second", 2.0)  # over SEAL_EVERY_S after the first: sealed apart
    waits.add("t", "third", 2.1)
    assert waits.take("t") == ["first", "second", "third"] and waits.take("t") == []
    assert len(waits) == 1 and waits.take("u") == ["other"]


def test_ids_with_any_printable_text_come_back_whole() -> None:
    waits, ids = WaitingSpans(100), ["", "é-ünï", "a" * 300, "x y/z", "🙂"]
    for rid in ids:
        waits.add("t", rid, 0.0)
    waits.seal()
    assert waits.take("t") == ids


def test_a_generation_whose_spans_are_all_joined_is_let_go_before_it_expires() -> None:
    """Under a load generator every waiting span is joined within seconds: what holds them is freed
    then, not after the 30 s wait (else 30 s of a busy node's spans would stay as arrays)."""
    waits = WaitingSpans(100)
    for k in range(3):  # three generations, a second apart
        waits.add(f"t{k}", f"r{k}", float(k))
    waits.seal()
    assert waits.take("t1") == ["r1"] and len(waits._gens) == 3  # not the oldest: kept for now
    assert waits.take("t0") == ["r0"] and len(waits._gens) == 1  # the two oldest, both empty, go
    assert waits._keys.size == 1 and waits.take("t2") == ["r2"] and waits._keys.size == 0
