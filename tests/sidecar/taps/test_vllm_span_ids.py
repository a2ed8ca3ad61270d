"""A batch's span ids checked: each refused row counted for its own first reason (its id, a request
handled before or twice in the batch, its numbers), the others taken in order."""

from __future__ import annotations

from collections import Counter

from sidecar.contracts.vllm_ids import CHAT
from sidecar.recent_ids_sorted import SortedRecentIds
from sidecar.taps.vllm_span_ids import checked_rows


def test_checked_rows_refuses_each_row_for_its_own_first_reason() -> None:
    handled: SortedRecentIds[str] = SortedRecentIds(100)
    handled.add_many(["old"])
    counts: Counter[str] = Counter()
    raws = [f"{CHAT}a", f"{CHAT}old", 7, f"{CHAT}a", f"{CHAT}b", f"{CHAT}c"]
    codes = [0, 0, 0, 0, 1, 0]  # row 4's numbers failed the first check (REASONS[0])
    assert checked_rows(raws, handled, codes, counts) == [(0, f"{CHAT}a", "a"), (5, f"{CHAT}c", "c")]
    assert counts["rejected_duplicate"] == 2 and counts["rejected_bad_id"] == 1 and sum(counts.values()) == 4
