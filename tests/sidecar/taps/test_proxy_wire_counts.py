"""The proxy wire's counts: a lost datagram's chunks are missing once, not again on every later row;
the proxy's own counters (``jouletrace_tap="proxy"``) never go back and take no forged jump."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.attribution.events import WORK_LOST, Phase
from sidecar.contracts.proxy_wire import encode
from sidecar.proxy.learn import Counts
from sidecar.proxy.sender import WireSender
from sidecar.taps.proxy_rows import MAX_COUNT_STEP
from sidecar.taps.proxy_wire import ProxyWireReceiver
from tests.sidecar.taps.test_proxy_wire import GOOD_BEGIN, raw, receiver


def chunk_ago_us(k: int) -> int:
    """Chunk ``k`` of r1 (begun at mono 99): at mono 99.1 + 0.005 k, as microseconds before WALL."""
    return 900_000 - 5_000 * k


def stream_with_a_lost_datagram(rx: ProxyWireReceiver, chunks: int, lost: set[int]) -> None:
    """r1's begin, then one datagram per chunk (those in ``lost`` never arrive), then usage and end."""
    rx.feed(raw(0, begin=[GOOD_BEGIN]))
    for k in range(chunks):
        if k not in lost:
            rx.feed(raw(1 + k, chunks=[["r1", k, [chunk_ago_us(k)]]]))
    rx.feed(raw(1 + chunks, usage=[["r1", 12, chunks]], end=[["r1", 0.0, "ok", 200, None]]))


@pytest.mark.parametrize("after", [10, 100])
def test_one_lost_chunk_counts_missing_once_however_many_chunks_follow(after: int) -> None:
    rx = receiver()
    stream_with_a_lost_datagram(rx, 10 + after, lost={9})
    assert rx.counts["lost"] == 1 and rx.counts["chunks_missing"] == 1, dict(rx.counts)
    events, infos = rx.due(101.0)
    # the work that arrived is what it was: a decode event up to each chunk taken after the first
    decode_end_s = [e.t1_s for e in events if e.phase is Phase.DECODE]
    taken = [k for k in range(10 + after) if k != 9]
    assert decode_end_s == pytest.approx([99.1 + 0.005 * k for k in taken[1:]])
    assert infos[-1].output_tokens == 10 + after


@pytest.mark.parametrize(
    ("lost", "marked"), [(set(), None), ({9}, "true"), ({0}, "true"), (set(range(20)), "true")]
)  # all its chunk datagrams lost: no chunk row tells, the gap in the datagrams' numbers does
def test_a_request_that_lost_chunks_says_its_work_was_lost(lost: set[int], marked: str | None) -> None:
    """Its record is then energy_unknown, not a share too low (or 0 J, all its chunks lost)."""
    rx = receiver()
    stream_with_a_lost_datagram(rx, 20, lost=lost)
    _, infos = rx.due(101.0)
    assert infos[-1].attributes.get(WORK_LOST) == marked


def test_a_refused_chunk_row_marks_its_request_work_lost() -> None:
    rx = receiver()
    rx.feed(raw(0, begin=[GOOD_BEGIN], chunks=[["r1", 0, [chunk_ago_us(1)]]]))
    rx.feed(raw(1, chunks=[["r1", 1, [chunk_ago_us(0)]]]))  # before the chunk taken: refused
    rx.feed(raw(2, usage=[["r1", 12, 2]], end=[["r1", 0.0, "ok", 200, None]]))
    _, infos = rx.due(101.0)
    assert rx.counts["rejected_end_before_start"] == 1 and infos[-1].attributes[WORK_LOST] == "true"


def test_gaps_of_several_chunks_count_each_missing_number_once() -> None:
    rx = receiver()
    rx.feed(raw(0, begin=[GOOD_BEGIN], chunks=[["r1", 0, [chunk_ago_us(0), chunk_ago_us(1)]]]))
    rx.feed(raw(2, chunks=[["r1", 5, [chunk_ago_us(5), chunk_ago_us(6)]]]))  # 2..4 lost with seq 1
    rx.feed(raw(3, chunks=[["r1", 7, [chunk_ago_us(7)]]]))
    rx.feed(raw(5, chunks=[["r1", 10, [chunk_ago_us(10)]]]))  # 8, 9 lost with seq 4
    rx.feed(raw(6, chunks=[["r1", 11, [chunk_ago_us(11)]]]))
    assert rx.counts["chunks_missing"] == 5 and rx.counts["lost"] == 2


def test_a_chunk_listed_again_after_a_gap_is_a_duplicate() -> None:
    """Numbers past the gap are known: chunk 19 again is refused (counting by times taken, 19 of 20
    arrived, would have taken it as new)."""
    rx = receiver()
    rx.feed(raw(0, begin=[GOOD_BEGIN]))
    for k in [*range(9), *range(10, 20)]:
        rx.feed(raw(1 + k, chunks=[["r1", k, [chunk_ago_us(k)]]]))
    assert rx.counts["rejected_duplicate"] == 0
    rx.feed(raw(30, chunks=[["r1", 19, [chunk_ago_us(19)]]]))  # the last chunk again
    rx.feed(raw(31, chunks=[["r1", 9, [chunk_ago_us(9)]]]))  # the lost one, late: its place is past
    assert rx.counts["rejected_duplicate"] == 2 and rx.counts["chunks_missing"] == 1


# ---- the proxy's own counters ----------------------------------------------------------------------
def proxy_counts(rx: ProxyWireReceiver) -> dict[str, int]:
    return {what: n for (tap, what), n in rx.stats().events.items() if tap == "proxy"}


def counts(rx: ProxyWireReceiver, pid: int, seq: int, **values: Any) -> None:
    rx.feed(raw(seq, pid=str(pid), counts=values))


def test_a_forgotten_sender_keeps_what_it_counted_and_is_not_counted_again() -> None:
    rx = receiver()
    counts(rx, 1000, 0, completions=5000, streams=5000)
    assert proxy_counts(rx) == {"completions": 5000, "streams": 5000}
    for pid in range(2000, 2064):  # 64 other senders: 1000 is forgotten
        counts(rx, pid, 0)
    assert proxy_counts(rx) == {"completions": 5000, "streams": 5000}
    counts(rx, 1000, 1, completions=5001, streams=5001)  # back: its values are its base, not new
    assert proxy_counts(rx) == {"completions": 5000, "streams": 5000}
    counts(rx, 1000, 2, completions=5004, streams=5001)
    assert proxy_counts(rx) == {"completions": 5003, "streams": 5000}


@pytest.mark.parametrize(("pid", "seq"), [(1000, 1), (7, 0)])  # as the real sender, or a new one
def test_a_forged_huge_count_is_refused_and_counted_not_added(pid: int, seq: int) -> None:
    rx = receiver()
    counts(rx, 1000, 0, completions=5000)
    counts(rx, pid, seq, completions=2**52, streams=MAX_COUNT_STEP + 1)
    assert proxy_counts(rx) == {"completions": 5000} and rx.counts["rejected_count_jump"] == 2
    counts(rx, 8, 0, completions=MAX_COUNT_STEP, streams=3)  # the most one datagram may add
    assert proxy_counts(rx) == {"completions": 5000 + MAX_COUNT_STEP, "streams": 3}
    counts(rx, pid, seq + 1, completions=2**52 + 2)  # its next step counts, from the refused value
    assert proxy_counts(rx)["completions"] == 5002 + MAX_COUNT_STEP


def test_a_counter_that_goes_back_is_refused_and_counted_and_the_total_stays() -> None:
    rx = receiver()
    counts(rx, 1000, 0, completions=50)
    counts(rx, 1000, 1, completions=10)
    assert proxy_counts(rx) == {"completions": 50} and rx.counts["rejected_count_backwards"] == 1
    counts(rx, 1000, 2, completions=12)
    assert proxy_counts(rx) == {"completions": 52}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (-1, "negative"),
        (2**53 + 1, "out_of_range"),
        (1.5, "wrong_type"),
        (True, "wrong_type"),
        ("3", "wrong_type"),
    ],
)
def test_a_bad_count_value_is_counted_and_costs_the_others_nothing(value: Any, reason: str) -> None:
    rx = receiver()
    counts(rx, 1000, 0, completions=4, streams=2)
    counts(rx, 1000, 1, completions=value, streams=5)
    assert proxy_counts(rx) == {"completions": 4, "streams": 5}  # its neighbour counted at once
    counts(rx, 1000, 2, completions=6, streams=5)
    assert proxy_counts(rx) == {"completions": 6, "streams": 5}
    assert rx.counts[f"rejected_{reason}"] == 1


def test_a_late_datagram_carries_older_counts_and_moves_nothing() -> None:
    rx = receiver()
    counts(rx, 1000, 0, completions=1)
    counts(rx, 1000, 2, completions=9)  # seq 1 late
    counts(rx, 1000, 1, completions=5)
    assert proxy_counts(rx) == {"completions": 9}
    assert rx.counts["rejected_count_backwards"] == 0 and rx.counts["reordered"] == 1


def test_a_sender_heard_first_late_counts_from_its_values_and_one_restarted_from_zero() -> None:
    """Heard first at datagram 40,000 (it ran before this sidecar): its values are its base. The same pid
    numbering from 0 again (a new proxy): all it counted is new."""
    rx = receiver()
    counts(rx, 1000, 40_000, completions=700)
    assert proxy_counts(rx) == {"completions": 0}
    counts(rx, 1000, 40_001, completions=710)
    counts(rx, 1000, 0, completions=3)  # a jump back beyond the window: restarted
    assert proxy_counts(rx) == {"completions": 13} and rx.counts["seq_jumps"] == 1


def test_a_real_senders_counters_all_count() -> None:
    """The proxy's own sender: what its Counts added reaches the totals, message after message."""
    proxy = Counts()
    sender = WireSender(("127.0.0.1", 9), proxy, clock=lambda: 0.0, wall=lambda: 1000.0)
    rx = receiver()
    try:
        for added in (3, 0, 250, 1):
            for _ in range(added):
                proxy.add("completions")
                proxy.add("malformed_sse")
            proxy.add("streams")
            datagrams = encode(sender.message())
            sender.seq += len(datagrams)  # as its flush does
            for data in datagrams:
                rx.feed(data)
    finally:
        sender.close()
    assert proxy_counts(rx) == {"completions": 254, "malformed_sse": 254, "streams": 4}
    assert not [k for k in rx.counts if k.startswith("rejected")]


def test_work_of_a_request_the_engine_tap_reports_too_is_left_to_it_its_info_kept() -> None:
    """The hook (or plugin) and the proxy report one request (the same id): its work once, the hook's."""
    rx = receiver(claimed_by=lambda request_id: request_id == "r1")
    stream_with_a_lost_datagram(rx, 5, lost=set())
    events, infos = rx.due(101.0)
    assert events == [] and rx.stats().events[("proxy_wire", "work_claimed_by_engine")] > 0
    assert infos[-1].request_id == "r1" and infos[-1].attributes["jouletrace.tenant"] == "team-a"
    alone = receiver()
    stream_with_a_lost_datagram(alone, 5, lost=set())
    assert alone.due(101.0)[0]  # unclaimed: the proxy's work
