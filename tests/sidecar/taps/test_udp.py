"""A datagram whose handling raises costs only itself; a tick handles a tap's datagrams within a budget."""

from __future__ import annotations

import socket
import time
from collections import Counter

from sidecar.attribution.events import RequestInfo
from sidecar.taps.spans import TapOutput
from sidecar.taps.udp import bind_udp, drain, feed_all


def _feed(data: bytes, out: TapOutput) -> None:
    if data == b"poison":
        raise OverflowError("a bug the receiver's checks missed")
    out.infos.append(RequestInfo(data.decode()))


def _ids(out: TapOutput) -> list[str]:
    return [i.request_id for i in out.infos]


def test_a_datagram_whose_handling_raises_is_counted_and_the_others_are_kept() -> None:
    counts: Counter[str] = Counter()
    out, left = feed_all([b"a", b"poison", b"b"], _feed, counts)
    assert _ids(out) == ["a", "b"] and left == [] and counts["internal_errors"] == 1


def test_what_a_spent_budget_leaves_is_handed_back_in_order_and_counted() -> None:
    counts: Counter[str] = Counter()
    out, left = feed_all([b"a", b"b", b"c"], _feed, counts, budget_s=-1.0)  # spent after the first
    assert _ids(out) == ["a"] and left == [b"b", b"c"] and counts["drain_budget_spent"] == 1 and out.behind
    out, left = feed_all(left, _feed, counts, budget_s=-1.0)
    assert _ids(out) == ["b"] and left == [b"c"]
    out, left = feed_all(left, _feed, counts, budget_s=-1.0)  # the last one: nothing left to count
    assert _ids(out) == ["c"] and left == [] and counts["drain_budget_spent"] == 2


def test_a_drain_stops_once_its_budget_is_spent_and_the_rest_wait_in_the_socket() -> None:
    """A flood of costly datagrams held the event loop (and /healthz with it) for as long as they
    took; a tick now handles a tap's datagrams for at most its budget."""
    sock = bind_udp("127.0.0.1", 0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for name in (b"a", b"b", b"c"):
            sender.sendto(name, sock.getsockname())
        time.sleep(0.05)
        counts: Counter[str] = Counter()
        first = drain(sock, _feed, 100, counts, budget_s=-1.0)
        rest = drain(sock, _feed, 100, counts)
        assert _ids(first) == ["a"] and _ids(rest) == ["b", "c"] and counts["drain_budget_spent"] == 1
        assert first.behind and not rest.behind  # (a sender's silence then proves nothing: .senders)
    finally:
        sender.close()
        sock.close()
