"""RecentIds: the last N distinct ids, forgotten oldest first, as the OrderedDict it replaces."""

from __future__ import annotations

import pytest

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


def test_it_needs_room_for_one_id() -> None:
    with pytest.raises(ValueError, match="at least one"):
        RecentIds(0)
