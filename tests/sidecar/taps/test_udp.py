"""A datagram whose handling raises costs only itself: the datagrams around it are still handled."""

from __future__ import annotations

from collections import Counter

from sidecar.attribution.events import RequestInfo
from sidecar.taps.spans import TapOutput
from sidecar.taps.udp import feed_all


def test_a_datagram_whose_handling_raises_is_counted_and_the_others_are_kept() -> None:
    def feed(data: bytes, out: TapOutput) -> None:
        if data == b"poison":
            raise OverflowError("a bug the receiver's checks missed")
        out.infos.append(RequestInfo(data.decode()))

    counts: Counter[str] = Counter()
    out = feed_all([b"a", b"poison", b"b"], feed, counts)
    assert [i.request_id for i in out.infos] == ["a", "b"] and counts["internal_errors"] == 1
