"""The plugin receiver's recent-id table and token history on their own."""

from __future__ import annotations

import pytest

from sidecar.taps.vllm_plugin_seen import SeenIds
from sidecar.taps.vllm_plugin_tokens import TokenHistory


def test_claimed_and_finished_are_separate_bits_of_one_entry() -> None:
    seen = SeenIds(most=3)
    seen.claim("a")
    seen.finish("b")
    seen.claim("b")
    assert (seen.claimed("a"), seen.finished("a")) == (True, False)
    assert (seen.claimed("b"), seen.finished("b")) == (True, True)
    assert not seen.claimed("c") and not seen.finished("c")


def test_the_oldest_id_is_forgotten_beyond_the_cap_and_a_repeat_does_not_renew_it() -> None:
    seen = SeenIds(most=2)
    for rid in ("a", "b"):
        seen.claim(rid)
    seen.finish("a")  # a second bit for "a": still the oldest entry
    seen.claim("c")
    assert [seen.claimed(r) for r in ("a", "b", "c")] == [False, True, True]


def test_a_table_without_room_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one id"):
        SeenIds(most=0)


def test_token_history_answers_by_wall_time_and_not_before_it_started() -> None:
    tokens = TokenHistory(most=2)
    assert tokens.until(10.0) is None  # not listening yet
    tokens.started_wall_s = 5.0
    assert tokens.until(4.0) is None and tokens.until(6.0) == (0, 0)
    for wall_s, prompt, generation in ((7.0, 10, 1), (8.0, 0, 2), (9.0, 4, 3)):
        tokens.add(wall_s, prompt, generation)
    assert tokens.until(8.5) == (10, 3) and tokens.until(99.0) == (14, 6)
    assert tokens.until(7.5) == (0, 0)  # the point at 7.0 fell out of the two kept
