"""A proxied request still being answered but with no work yet is kept alive, not ended as gone.

A plain (not streamed) answer the engine takes long to give, or a long queue wait before the
first byte, makes no chunk for a while. Before, the wire receiver ended such a request after
``request_timeout_s`` without a row (``expired``) and attribution ended it by its own timeout;
its answer's rows then came as ``unknown_request`` and its record was final at 0 J (probe 5 #1).
Now the proxy says ``alive`` for it, the receiver counts that as heard of, and the book hands its
info on again, which attribution takes as heard of (its timeout runs from then).
"""

from __future__ import annotations

import json

from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import RequestInfo
from sidecar.attribution.rules import make_rule
from sidecar.contracts.proxy_wire import ALIVE_MAX_S, alive_every_s, encode
from sidecar.proxy.book import TraceBook
from sidecar.proxy.learn import Counts, RequestTrace
from sidecar.proxy.sender import WireSender
from sidecar.taps.proxy_wire import ProxyWireReceiver
from tests.sidecar.attribution.helpers import timeline_with_edges


def trace(request_id: str, arrival_s: float = 0.0) -> RequestTrace:
    return RequestTrace(request_id, arrival_s, "/v1/chat/completions", stream=False)


def test_the_interval_is_a_quarter_of_the_timeout_and_at_most_the_cap() -> None:
    assert alive_every_s(600.0) == ALIVE_MAX_S and alive_every_s(8.0) == 2.0


def test_the_sender_says_alive_for_a_quiet_request_only_once_per_interval() -> None:
    now = [0.0]
    sender = WireSender(
        ("127.0.0.1", 9), Counts(), clock=lambda: now[0], wall=lambda: 1000.0, alive_every_s=2.0
    )
    quiet, busy = trace("quiet"), trace("busy")
    sender.begin(quiet)
    sender.begin(busy)
    assert sender.message().alive == []  # their begin rows say they are there
    alive_at = []
    for k in range(1, 41):  # 4 s in flushes of 0.1 s; busy has a chunk in each
        now[0] = 0.1 * k
        busy.add_chunk(now[0])
        message = sender.message()
        assert all(row.request_id == "quiet" for row in message.alive)
        alive_at += [round(now[0], 1)] * len(message.alive)
    assert alive_at == [2.0, 4.0]
    doc = json.loads(encode(sender.message())[0])
    assert "alive" in doc  # a section of the datagram (empty here)


def test_the_book_hands_a_live_requests_info_on_again_every_interval() -> None:
    book = TraceBook(Counts(), hold_s=0.5, model="m", alive_every_s=2.0)
    book.add(trace("r"))
    infos_at = []
    for k in range(0, 70):  # 7 s of ticks of 0.1 s
        _, infos = book.due(0.1 * k)
        infos_at += [round(0.1 * k, 1) for _ in infos]
    assert infos_at == [0.0, 2.0, 4.0, 6.0]


def test_attribution_takes_an_info_again_as_heard_of_so_its_timeout_runs_from_then() -> None:
    edges = [(0.1 * k, 10.0 * k) for k in range(101)]  # one edge every 0.1 s for 10 s, 100 W
    att = Attributor(
        timeline_with_edges(edges), make_rule("tokens"), unix_offset=lambda: 0.0, request_timeout_s=2.0
    )
    att.add_request(RequestInfo("slow"))  # a plain answer on its way: no work yet
    assert att.advance(1.5) == []
    att.add_request(RequestInfo("slow"))  # still alive (the book's keep-alive)
    assert att.advance(3.0) == []  # without it: ended at 2.0 as expired (test_lifecycle)
    done = att.advance(3.6)
    assert [r.request_id for r in done] == ["slow"] and att.dropped["expired"] == 1


def test_alive_rows_keep_a_quiet_request_in_the_receiver_past_its_timeout() -> None:
    read = [1000.0]
    rx = ProxyWireReceiver(lambda unix_s: unix_s - 900.0, wall=lambda: read[0], hold_s=0.5, expire_s=12.0)
    begin = ["quiet", 0.0, "/v1/chat/completions", "m", False, None, None, None, 10]
    seq = 0

    def send(**rows: object) -> None:
        nonlocal seq
        rx.feed(json.dumps({"v": 1, "kind": "proxy", "pid": 7, "seq": seq, "wall": read[0], **rows}).encode())
        seq += 1

    send(begin=[begin], alive=[["no-such-request"]])
    for k in range(1, 9):  # 40 s, an alive row every 5 s
        read[0] = 1000.0 + 5.0 * k
        send(alive=[["quiet"]])
        rx.due(100.0 + 5.0 * k)
    stats = rx.stats().events
    assert ("proxy_wire", "expired") not in stats and rx.live_requests == 1
    assert stats[("proxy_wire", "alive")] == 8 and stats[("proxy_wire", "unknown_request")] == 1
    rx.due(100.0 + 40.0 + 12.0)  # then silence: gone after expire_s
    assert rx.stats().events[("proxy_wire", "expired")] == 1 and rx.live_requests == 0
