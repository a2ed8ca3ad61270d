"""The proxy wire's senders: what datagrams under one pid do (a gap in their numbers, a flood of
requests or chunk rows) costs that pid's requests only, never a request of the proxy beside it."""

from __future__ import annotations

from sidecar.attribution.events import WORK_LOST
from sidecar.taps.proxy_wire_owners import FORGOTTEN, Owners
from tests.sidecar.taps.test_proxy_wire import GOOD_BEGIN, raw, receiver

REST = ["/v1/completions", None, True, None, None, None, 4]  # a begin row after its id and arrival


def test_a_gap_in_one_senders_numbers_marks_only_its_own_requests_work_lost() -> None:
    """Adversarial probe: two header-only datagrams of a made-up pid (seq 0, then 5) marked every live
    proxied request, the real proxy's too, ``work_lost``: their records said energy unknown."""
    rx = receiver()
    rx.feed(raw(0, begin=[GOOD_BEGIN], chunks=[["r1", 0, [500_000]]]))
    rx.feed(raw(0, pid="99", begin=[["forged", 1.0, *REST]]))
    rx.feed(raw(5, pid="99"))  # 1..4 never came: the forged pid's own request may have lost rows
    rx.feed(raw(1, chunks=[["r1", 1, [400_000]]], usage=[["r1", 12, 2]], end=[["r1", 0.2, "ok", 200, "m"]]))
    rx.feed(raw(6, pid="99", end=[["forged", 0.1, "ok", 200, "m"]]))
    _, infos = rx.due(101.0)
    lost = {i.request_id: i.attributes.get(WORK_LOST) for i in infos if i.end_s is not None}
    assert lost == {"r1": None, "forged": "true"} and rx.counts["lost"] == 4


def test_over_max_requests_the_sender_holding_the_most_loses_its_oldest() -> None:
    """Adversarial probe: 51,000 forged ``begin`` rows of one pid evicted every real request in flight."""
    rx = receiver(max_requests=3)
    rx.feed(raw(0, begin=[GOOD_BEGIN]))
    rx.feed(raw(0, pid="99", begin=[[f"f{i}", 1.0, *REST] for i in range(4)]))
    assert rx.counts["evicted"] == 2
    rx.feed(raw(1, usage=[["r1", 12, 0]], end=[["r1", 0.2, "ok", 200, "m"]]))
    _, infos = rx.due(101.0)
    ended = {i.request_id: i.attributes["jouletrace.request.status"] for i in infos if i.end_s is not None}
    assert ended == {"f0": "disconnected", "f1": "disconnected", "r1": "ok"}


def test_over_max_chunks_the_sender_holding_the_most_pays_not_the_newcomers_row() -> None:
    """Adversarial probe: forged chunk rows took the whole chunk budget; the real streams' rows were
    refused (``rejected_chunks_over_cap``) and their records ended 0 J, energy unknown."""
    rx = receiver(max_chunks=5)
    rx.feed(raw(0, pid="99", begin=[["f0", 1.0, *REST]], chunks=[["f0", 0, [500_000, 400_000, 300_000]]]))
    rx.feed(raw(1, pid="99", begin=[["f1", 1.0, *REST]], chunks=[["f1", 0, [500_000]]]))
    rx.feed(raw(0, begin=[GOOD_BEGIN], chunks=[["r1", 0, [500_000, 400_000]]]))  # 6 > 5: f0 pays
    assert rx.counts["rejected_chunks_over_cap"] == 0 and rx.counts["evicted"] == 1
    rx.feed(raw(2, pid="99", chunks=[["f1", 1, [400_000, 300_000]]]))  # 5: room
    rx.feed(raw(3, pid="99", chunks=[["f1", 3, [200_000]]]))  # 6 > 5, pid 99 holds the most: refused
    assert rx.counts["rejected_chunks_over_cap"] == 1 and rx.counts["evicted"] == 1
    rx.feed(raw(1, usage=[["r1", 12, 2]], end=[["r1", 0.2, "ok", 200, "m"]]))
    _, infos = rx.due(101.0)
    (r1,) = [i for i in infos if i.request_id == "r1"]
    assert r1.attributes.get(WORK_LOST) is None and r1.output_tokens == 2


def test_a_forgotten_senders_requests_still_count_under_one_owner() -> None:
    """The senders' table forgets the pid heard least lately; its requests are not let off (a flood's
    pid pushed out by more forged ones still pays) and the owners looked at stay few."""
    owners = Owners()
    for k in range(3):
        owners.add(f"f{k}", 99)
        owners.took_chunks(f"f{k}", 2)
    owners.add("r1", 7)
    owners.took_chunks("r1", 3)
    owners.forget(99)
    assert owners.ids(99) == [] and owners.ids(FORGOTTEN) == ["f0", "f1", "f2"]
    assert owners.most_chunks() == (FORGOTTEN, "f0") and owners.most_requests() == "f0"
    for k in range(3):
        owners.drop(f"f{k}")
    assert owners.most_chunks() == (7, "r1") and owners.pid_of("f0") is None
