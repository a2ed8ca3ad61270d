"""RecentIds: the last N distinct ids (kept as hashes), forgotten oldest first."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.recent_ids import RecentIds


def test_an_id_is_remembered_until_most_newer_ids_came_then_forgotten_oldest_first() -> None:
    recent: RecentIds[str] = RecentIds(3)
    for key in ("a", "b", "c"):
        recent.add(key)
    assert all(k in recent for k in "abc") and len(recent) == 3
    recent.add("d")
    assert "a" not in recent and all(k in recent for k in "bcd") and len(recent) == 3


def test_a_repeat_neither_grows_it_nor_refreshes_its_place() -> None:
    recent: RecentIds[str] = RecentIds(2)
    recent.add("a")
    recent.add("a")
    recent.add("b")
    assert len(recent) == 2
    recent.add("c")  # "a" is still the oldest: its repeat did not move it
    assert "a" not in recent and "b" in recent and "c" in recent


def test_add_new_says_whether_the_id_was_new() -> None:
    recent: RecentIds[bytes] = RecentIds(1)
    assert recent.add_new(b"a") and not recent.add_new(b"a")
    assert recent.add_new(b"b") and b"a" not in recent and recent.add_new(b"a")


def test_it_needs_room_for_one_id() -> None:
    with pytest.raises(ValueError, match="at least one"):
        RecentIds(0)


def test_ids_of_the_same_table_slot_are_kept_apart_and_forgotten_in_order() -> None:
    """Ints hash to themselves: ids 8 apart share a home slot in the 8-slot table of most=4, so
    they probe past each other and forgetting one shifts the others back (wrapping round)."""
    recent: RecentIds[int] = RecentIds(4)
    for key in (7, 15, 23, 6):  # 7, 15, 23 all start at slot 7: two wrap to slots 0 and 1
        recent.add(key)
    recent.add(31)  # forgets 7: 15 and 23 move back, 31 joins the run
    assert 7 not in recent and all(k in recent for k in (15, 23, 6, 31)) and len(recent) == 4
    recent.add(2)
    recent.add(3)  # forgets 15, then 23
    assert [k in recent for k in (15, 23, 6, 31, 2, 3)] == [False, False, True, True, True, True]


def test_memory_is_fixed_at_start_at_most_40_bytes_an_id() -> None:
    recent: RecentIds[str] = RecentIds(100_000)
    table_bytes = recent._table.itemsize * len(recent._table) + recent._ring.itemsize * len(recent._ring)
    for k in range(250_000):
        recent.add(f"chatcmpl-{k:032x}")
    assert table_bytes == recent._table.itemsize * len(recent._table) + 8 * len(recent._ring)
    assert table_bytes / 100_000 <= 40 and len(recent) == 100_000


@settings(max_examples=300, deadline=None)
@given(
    most=st.integers(min_value=1, max_value=9),
    # one kind of key per table, as in the sidecar (ints hash to themselves; -1 and -2 would collide)
    keys=st.one_of(st.lists(st.integers(0, 40), max_size=80), st.lists(st.text(max_size=2), max_size=80)),
)
def test_answers_as_a_set_and_a_deque_of_the_ids_would(most: int, keys: list[int] | list[str]) -> None:
    recent: RecentIds[object] = RecentIds(most)
    ids: set[object] = set()
    order: deque[object] = deque()
    for key in keys:
        recent.add(key)
        if key not in ids:
            ids.add(key)
            order.append(key)
            if len(order) > most:
                ids.discard(order.popleft())
        assert len(recent) == len(ids)
        assert all((k in recent) == (k in ids) for k in keys)
