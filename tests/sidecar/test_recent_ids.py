"""RecentIds: the last N distinct ids, forgotten oldest first, as a set and a deque of them would be
(and SortedRecentIds where its generations hold one id)."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.recent_ids import RecentIds
from sidecar.recent_ids_sorted import SortedRecentIds


# SortedRecentIds of 3 or 2 ids: generations of one id, as exact as the ring
@pytest.mark.parametrize("table", [RecentIds, SortedRecentIds])
def test_an_id_is_remembered_until_most_newer_ids_came_then_forgotten_oldest_first(table: type) -> None:
    recent = table(3)
    for key in ("a", "b", "c"):
        recent.add(key)
    assert all(k in recent for k in "abc") and len(recent) == 3
    recent.add("d")
    assert "a" not in recent and all(k in recent for k in "bcd") and len(recent) == 3


@pytest.mark.parametrize("table", [RecentIds, SortedRecentIds])
def test_a_repeat_neither_grows_it_nor_refreshes_its_place(table: type) -> None:
    recent = table(2)
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


@settings(max_examples=500, deadline=None)
@given(
    most=st.integers(min_value=1, max_value=9),
    # one kind of key per table, as in the sidecar
    # ints hash to themselves: 0..200 share table slots and wrap around its end (long probe runs)
    keys=st.one_of(st.lists(st.integers(0, 200), max_size=200), st.lists(st.text(max_size=2), max_size=80)),
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


def test_ids_whose_hashes_share_a_slot_are_told_apart_and_forgotten_in_order() -> None:
    recent: RecentIds[int] = RecentIds(3)  # a table of 16 slots: 5, 21, 37 and 53 all start at slot 5
    for key in (5, 21, 37):
        recent.add(key)
    assert [k in recent for k in (5, 21, 37, 53)] == [True, True, True, False]
    assert recent.add_new(53) and [k in recent for k in (5, 21, 37, 53)] == [False, True, True, True]
    assert recent.add_new(0) and 0 in recent and 21 not in recent  # a hash of 0 is kept too
