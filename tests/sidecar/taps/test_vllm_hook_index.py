"""IdxSlots answers every lookup as the dict it caches would, whatever numbers a sender uses."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.taps.vllm_hook_index import IdxSlots

MAX_INDEX = 2**53
_idx = st.one_of(st.integers(0, 40), st.integers(0, MAX_INDEX))  # near the window and anywhere
_op = st.tuples(st.sampled_from(["set", "pop", "clear"]), _idx, st.integers(0, 10_000))
_ops = st.lists(_op, max_size=80)


@settings(max_examples=300, deadline=None)
@given(ops=_ops, probe=st.lists(_idx, max_size=30))
def test_lookups_match_a_plain_dict(ops: list[tuple[str, int, int]], probe: list[int]) -> None:
    slots, plain = IdxSlots(window=8), {}
    for op, idx, slot in ops:
        if op == "set":
            slots.set(idx, slot)
            plain[idx] = slot
        elif op == "pop" and idx in plain:
            slots.pop(idx)
            del plain[idx]
        elif op == "clear":
            slots.clear()
            plain.clear()
        assert len(slots) == len(plain) and all(i in slots for i in plain)
    asked = np.array([*probe, *plain], dtype=np.int64)
    assert slots.lookup(asked).tolist() == [plain.get(i, -1) for i in asked.tolist()]


def test_numbers_counting_up_stay_in_the_window_and_old_ones_still_resolve() -> None:
    slots = IdxSlots(window=16)
    for idx in range(100):
        slots.set(idx, idx % 7)
    assert slots.lookup(np.arange(100)).tolist() == [i % 7 for i in range(100)]
    slots.pop(99)
    assert slots.lookup(np.array([99, 0, 10**15])).tolist() == [-1, 0, -1]


def test_after_a_clear_numbers_from_0_again_are_held_in_the_window_not_only_the_dict() -> None:
    slots = IdxSlots(window=16)
    for idx in range(40):
        slots.set(idx, idx)
    slots.clear()  # vLLM restarted: its new process numbers requests from 0
    for idx in range(5):
        slots.set(idx, 100 + idx)
    assert slots._win[:5].tolist() == [100, 101, 102, 103, 104]  # the array path, not the dict's loop
    assert slots.lookup(np.arange(6)).tolist() == [100, 101, 102, 103, 104, -1]


class _NoWalk(dict[int, int]):
    """A dict that refuses to be walked: a move of the window must not pass over every live number."""

    def items(self):  # type: ignore[override]
        raise AssertionError("the window was refilled from every live number")

    def __iter__(self):  # type: ignore[override]
        raise AssertionError("the window was refilled from every live number")


def test_numbers_that_jump_past_the_window_move_it_without_walking_the_live_ones() -> None:
    """A forged datagram whose every row jumps past the window: each move shifts the array (a
    refill from the dict cost a pass over up to 100,000 live requests a row), and lookups still
    answer as the dict does."""
    slots = IdxSlots(window=64)
    for idx in range(50):
        slots.set(idx, idx)
    slots._slot = _NoWalk(slots._slot)
    jumps = [50 + 40 * k for k in range(1, 200)]  # each beyond the window at its arrival
    for idx in jumps:
        slots.set(idx, idx + 1)
    plain = {**{i: i for i in range(50)}, **{i: i + 1 for i in jumps}}
    asked = np.array([*plain, 51, 10**12], dtype=np.int64)
    assert slots.lookup(asked).tolist() == [plain.get(i, -1) for i in asked.tolist()]
    assert (slots._win >= 0).sum() == sum(1 for i in plain if 0 <= i - slots._base < 64)
