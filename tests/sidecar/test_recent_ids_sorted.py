"""SortedRecentIds: recent distinct ids, remembered while fewer than ``most`` newer ones came, forgotten a
generation at a time before ``most + 2 * (most // 8)`` did; batches answer as calls one by one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.recent_ids_sorted import ADDED, GENERATIONS, KNOWN, LEFT_OUT, SortedRecentIds


def test_add_new_says_whether_the_id_was_new() -> None:
    recent: SortedRecentIds[bytes] = SortedRecentIds(1)
    assert recent.add_new(b"a") and not recent.add_new(b"a")
    assert recent.add_new(b"b") and recent.add_new(b"c") and b"a" not in recent and recent.add_new(b"a")


def test_it_needs_room_for_one_id() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SortedRecentIds(0)


def test_a_large_table_keeps_the_newest_generation_apart_and_the_rest_sorted() -> None:
    recent: SortedRecentIds[str] = SortedRecentIds(80)  # generations of 10
    ids = [f"id-{i}" for i in range(200)]
    assert (recent.add_many(ids) == ADDED).all()
    assert 80 <= len(recent) < 80 + 2 * 10
    assert [k in recent for k in ids] == list(recent.contains_many(ids))
    assert all(k in recent for k in ids[-80:]) and not any(k in recent for k in ids[: 200 - 100])


@settings(max_examples=400, deadline=None)
@given(
    most=st.integers(min_value=1, max_value=40),
    # one kind of key per table, as in the sidecar; small ints repeat often
    keys=st.one_of(st.lists(st.integers(0, 120), max_size=300), st.lists(st.text(max_size=2), max_size=120)),
)
def test_remembers_the_last_most_and_forgets_before_most_plus_two_generations(
    most: int, keys: list[int] | list[str]
) -> None:
    recent: SortedRecentIds[object] = SortedRecentIds(most)
    slack = 2 * max(most // GENERATIONS, 1)
    order: list[object] = []  # distinct keys as first added since last forgotten
    for key in keys:
        new = recent.add_new(key)
        assert new == (key not in order[-most:]) or key in order[-most - slack : -most]
        if new:
            order = [k for k in order if k != key] + [key]
        assert all(k in recent for k in order[-most:])
        assert not any(k in recent for k in order[: max(len(order) - most - slack, 0)])
        assert min(len(set(order)), most) <= len(recent) < most + slack


def _one_by_one(table: SortedRecentIds[int], batch: list[int], most_new: int) -> list[int]:
    """What add_many should say: each key at its turn, known, added while there is room, or left out."""
    codes = []
    for key in batch:
        if key in table:
            codes.append(KNOWN)
        elif most_new > 0:
            assert table.add_new(key)
            most_new -= 1
            codes.append(ADDED)
        else:
            codes.append(LEFT_OUT)
    return codes


@settings(max_examples=400, deadline=None)
@given(
    most=st.integers(min_value=1, max_value=30),
    batches=st.lists(st.tuples(st.lists(st.integers(0, 60), max_size=40), st.integers(0, 45)), max_size=12),
)
def test_a_batch_answers_and_leaves_the_table_as_the_same_calls_one_by_one(
    most: int, batches: list[tuple[list[int], int]]
) -> None:
    batched: SortedRecentIds[int] = SortedRecentIds(most)
    single: SortedRecentIds[int] = SortedRecentIds(most)
    for batch, most_new in batches:
        assert list(batched.contains_many(batch)) == [k in single for k in batch]
        limit = most_new if most_new < 40 else None  # no limit, now and then
        assert list(batched.add_many(batch, limit)) == _one_by_one(
            single, batch, len(batch) if limit is None else limit
        )
        assert len(batched) == len(single)
        assert all((k in batched) == (k in single) for k in range(61))


@settings(max_examples=300, deadline=None)
@given(
    most=st.integers(min_value=1, max_value=30),
    steps=st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, 60), max_size=25)), max_size=14),
)
def test_ids_added_one_at_a_time_and_in_batches_share_a_generation(
    most: int, steps: list[tuple[bool, list[int]]]
) -> None:
    """A generation of ids from both ways (the set and the sorted array) is kept, sealed and
    forgotten as if each id had come alone."""
    mixed: SortedRecentIds[int] = SortedRecentIds(most)
    single: SortedRecentIds[int] = SortedRecentIds(most)
    for batch, keys in steps:
        if batch:
            assert list(mixed.add_many(keys)) == _one_by_one(single, keys, len(keys))
        else:
            assert [mixed.add_new(k) for k in keys] == [single.add_new(k) for k in keys]
        assert len(mixed) == len(single)
        assert all((k in mixed) == (k in single) for k in range(61))
        assert list(mixed.contains_many(list(range(61)))) == [k in single for k in range(61)]
