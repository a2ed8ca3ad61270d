"""A batch's ids checked together say exactly what each id checked alone says (:func:`named_id`),
whatever the batch mixes: chats, other prefixes, empty, too long, not printable, not text; and a
batch's row keys are :func:`row_key`'s, the usual export's taken at once."""

from __future__ import annotations

from collections import Counter

import hypothesis.strategies as st
from hypothesis import given

from sidecar.contracts.scheduler_wire import MAX_ID_CHARS
from sidecar.contracts.vllm_ids import CHAT, NUMBERED, RESPONSES
from sidecar.recent_ids_sorted import SortedRecentIds
from sidecar.taps.otlp_decode import row_key, row_keys
from sidecar.taps.vllm_span_format import named_id
from sidecar.taps.vllm_span_ids import checked_rows, named_ids


class Text(str):
    """A str subclass: checked the exact way, as ``named_id`` takes it."""


_PREFIXES = ("", CHAT, RESPONSES, *NUMBERED)
_TAILS = ("", "-0", "_0")
_BODY = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(["x" * 256, "y" * 257, "a\x00b"])
ids = st.one_of(
    st.builds(
        lambda p, b, t: p + b + t, st.sampled_from(_PREFIXES), _BODY, st.sampled_from(["", "-0", "_0"])
    ),
    st.builds(lambda b: CHAT + "z" * b, st.integers(MAX_ID_CHARS - 12, MAX_ID_CHARS)),  # around vLLM's limit
    st.builds(Text, _BODY),
    st.none() | st.integers() | st.binary(max_size=4),
)


def _said(name: tuple[str, str] | Exception) -> object:
    """What a check said: the pair, or the refusal's type, reason and message."""
    if isinstance(name, Exception):
        return type(name), getattr(name, "reason", None), str(name)
    return name


@given(st.lists(ids, max_size=8) | st.lists(st.builds(lambda b: CHAT + b, st.text(min_size=1)), max_size=8))
def test_a_batch_of_ids_says_what_each_id_alone_says(raws: list[object]) -> None:
    assert [_said(n) for n in named_ids(raws)] == [_said(named_id(raw)) for raw in raws]


def test_the_usual_batch_takes_the_cut_of_a_chats_prefix() -> None:
    raws = [f"{CHAT}{i:032x}" for i in range(3)]
    assert named_ids(raws) == [(raw, raw[len(CHAT) :]) for raw in raws]
    mixed = [*raws, "cmpl-abc-0", "resp_q_0"]  # not all chats: each normalized
    assert [n[1] for n in named_ids(mixed) if isinstance(n, tuple)][3:] == ["abc", "resp_q"]


def test_checked_rows_refuses_each_row_for_its_own_first_reason() -> None:
    handled: SortedRecentIds[str] = SortedRecentIds(100)
    handled.add_many(["old"])
    counts: Counter[str] = Counter()
    raws = [f"{CHAT}a", f"{CHAT}old", 7, f"{CHAT}a", f"{CHAT}b", f"{CHAT}c"]
    codes = [0, 0, 0, 0, 1, 0]  # row 4's numbers failed the first check (REASONS[0])
    assert checked_rows(raws, handled, codes, counts) == [(0, f"{CHAT}a", "a"), (5, f"{CHAT}c", "c")]
    assert counts["rejected_duplicate"] == 2 and counts["rejected_bad_id"] == 1 and sum(counts.values()) == 4


_TID = st.binary(min_size=16, max_size=16) | st.binary(max_size=20)
_SID = st.binary(min_size=8, max_size=8) | st.binary(max_size=10)


@given(
    st.lists(st.tuples(_TID, _SID), max_size=6),
    st.sampled_from([b"llm_request", "\ud800".encode("utf-8", "surrogatepass")]),
)
def test_row_keys_are_row_keys(pairs: list[tuple[bytes, bytes]], name: bytes) -> None:
    tids, sids = [t for t, _ in pairs], [s for _, s in pairs]
    assert row_keys(tids, sids, name) == [row_key(t, s, name) for t, s in pairs]


def test_row_keys_of_the_usual_export_and_one_with_a_zero_id() -> None:
    tids, sids = [bytes([1] * 16), bytes([2] * 16)], [bytes([3] * 8), bytes([4] * 8)]
    assert row_keys(tids, sids, b"n") == [tids[0] + sids[0] + b"n", tids[1] + sids[1] + b"n"]
    assert row_keys(tids, [sids[0], bytes(8)], b"n")[1] is None  # all zeros: no span's key
