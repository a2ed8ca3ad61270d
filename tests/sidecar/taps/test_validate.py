"""The shared edge checks: each bad value is refused with a reason from the fixed set."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from sidecar.taps import validate as v
from sidecar.taps.sequence import SeqTracker


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (float("nan"), "not_finite"),
        (float("inf"), "not_finite"),
        (10**400, "not_finite"),
        ("12", "wrong_type"),
        (True, "wrong_type"),
        (None, "wrong_type"),
        (-7, "negative"),
        (1e30, "out_of_range"),
        (2.5, "wrong_type"),
    ],
)
def test_a_token_count_must_be_a_whole_finite_number_in_range(value: Any, reason: str) -> None:
    with pytest.raises(v.Rejected) as err:
        v.tokens(value, "t")
    assert err.value.reason == reason and err.value.reason in v.REASONS


def test_good_values_pass_through_with_their_type() -> None:
    assert v.tokens(12.0, "t") == 12 and isinstance(v.tokens(12.0, "t"), int)
    assert v.duration_s(0.25, "d") == 0.25 and v.duration_s(-1e-6, "d") == 0.0  # clock rounding
    assert v.unix_s(1000.5, "w", now_unix_s=1000.0) == 1000.5
    assert v.interval_s(1.0, 3.0, "span") == 2.0
    assert v.request_id("chatcmpl-abc") == "chatcmpl-abc"


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: v.duration_s(-5.0, "d"), "negative"),
        (lambda: v.duration_s(1e9, "d"), "out_of_range"),
        (lambda: v.unix_s(4102444800.0, "w", now_unix_s=1.7e9), "bad_time"),
        (lambda: v.interval_s(2.0, 1.0, "span"), "end_before_start"),
        (lambda: v.interval_s(0.0, 1e9, "span"), "out_of_range"),
        (lambda: v.request_id(""), "bad_id"),
        (lambda: v.request_id("x" * 300), "bad_id"),
        (lambda: v.request_id("a\nb"), "bad_id"),
        (lambda: v.request_id(7), "bad_id"),
        (lambda: v.count(2.0, "kv", 1.0), "out_of_range"),
    ],
)
def test_bad_durations_times_intervals_and_ids_are_refused_with_their_reason(call: Any, reason: str) -> None:
    with pytest.raises(v.Rejected) as err:
        call()
    assert err.value.reason == reason


def test_a_rejection_is_counted_under_its_reason() -> None:
    counts: Counter[str] = Counter()
    v.note(counts, v.Rejected("negative", "x"))
    v.note(counts, v.Rejected("no such reason", "x"))  # unknown reasons fold into 'malformed': bounded labels
    assert counts == Counter({"rejected_negative": 1, "rejected_malformed": 1})


def test_sequence_gaps_late_replays_and_jumps_are_told_apart() -> None:
    counts: Counter[str] = Counter()
    seqs = SeqTracker(counts, window=100, remember=8)
    assert [seqs.see(s) for s in (5, 6, 9, 8, 8, 10**30, 7)] == [True, True, True, True, False, True, True]
    assert counts == Counter({"lost": 2, "reordered": 1, "rejected_duplicate": 1, "seq_jumps": 2})
    seqs.reset()
    assert seqs.see(7)  # a restarted sender may reuse numbers


def test_a_duplicate_is_the_same_datagram_again_not_only_the_same_number() -> None:
    counts: Counter[str] = Counter()
    seqs = SeqTracker(counts, window=100, remember=3)
    assert seqs.see(1, 111) and seqs.see(1, 222)  # two parts of one number (or a forgery beside it)
    assert not seqs.see(1, 222) and counts["rejected_duplicate"] == 1  # the same bytes again
    assert counts["lost"] == 0 and counts["reordered"] == 0
    for s in (2, 3, 4):  # remember=3: (1, 111) and (1, 222) forgotten, oldest first
        assert seqs.see(s, s)
    assert not seqs.seen(1) and seqs.see(1, 222)  # forgotten: taken as a late one
    assert counts["reordered"] == 1
