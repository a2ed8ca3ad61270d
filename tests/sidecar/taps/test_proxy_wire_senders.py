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
    pid pushed out by more forged ones still pays) and the owners looked at stay few; heard again,
    a pid's requests are its own again."""
    owners = Owners()
    for k in range(3):
        owners.add(f"f{k}", 99)
        owners.took_chunks(f"f{k}", 2)
    owners.add("r1", 7)
    owners.took_chunks("r1", 3)
    owners.forget(99)
    assert owners.ids(99) == ["f0", "f1", "f2"] and owners.pid_of("f0") == FORGOTTEN
    assert owners.most_chunks() == (FORGOTTEN, "f0") and owners.most_requests() == "f0"
    owners.remember(99)
    assert owners.pid_of("f0") == 99 and owners.most_chunks() == (99, "f0")
    owners.forget(99)
    for k in range(3):
        owners.drop(f"f{k}")
    assert owners.most_chunks() == (7, "r1") and owners.pid_of("f0") is None


def test_among_the_forgotten_the_pid_that_began_its_requests_latest_pays_first() -> None:
    """A flood's pids are new; a proxy serving began its requests before them."""
    owners = Owners()
    owners.add("real", 7)
    for pid in range(100, 110):
        owners.add(f"f{pid}", pid)
    for pid in [7, *range(100, 110)]:
        owners.forget(pid)
    assert owners.most_requests() == "f109"
    for pid in range(100, 110):
        owners.drop(f"f{pid}")
    assert owners.most_requests() == "real" and owners.pid_of("real") == FORGOTTEN


def test_header_only_datagrams_of_64_forged_pids_do_not_push_the_real_proxys_streams_out() -> None:
    """Adversarial probe: 64 header-only datagrams of new pids pushed the real proxy out of the
    senders' table, its 3 streams went to the shared owner, and a flood of ``begin`` rows over 100
    more pids then evicted them there (the shared owner's oldest). A pid with no live request is
    forgotten first."""
    rx = receiver(max_requests=200)
    real = [f"real{i}" for i in range(3)]
    rx.feed(raw(0, begin=[[r, 0.5, *REST] for r in real], chunks=[[r, 0, [450_000]] for r in real]))
    for k in range(64):
        rx.feed(raw(0, pid=str(10_000 + k)))
    for k in range(100):
        ids = [f"forged{10 * k + j}" for j in range(10)]
        begins = [[f, 0.5, *REST] for f in ids]
        rx.feed(raw(0, pid=str(20_000 + k), begin=begins, chunks=[[f, 0, [400_000]] for f in ids]))
    assert rx.counts["evicted"] == 803 and rx.counts["internal_errors"] == 0
    rx.feed(raw(1, usage=[[r, 12, 1] for r in real], end=[[r, 0.2, "ok", 200, "m"] for r in real]))
    _, infos = rx.due(101.0)
    status = {i.request_id: i.attributes["jouletrace.request.status"] for i in infos if i.end_s is not None}
    assert {r: status[r] for r in real} == dict.fromkeys(real, "ok")


def test_a_forgotten_pid_whose_requests_hold_no_chunk_times_costs_no_datagram() -> None:
    """Adversarial probe: forgetting a pid whose live requests held no chunk times raised KeyError,
    and the datagram whose new pid made the room (here each of the real proxy's) was lost whole."""
    rx = receiver()
    fresh = iter(range(100_000, 10**9))
    for seq in range(5):
        rx.feed(raw(0, pid=str(next(fresh)), begin=[[f"x{seq}", 0.5, *REST]]))  # live, no chunks
        for _ in range(64):
            rx.feed(raw(0, pid=str(next(fresh))))
        rid = f"good{seq}"
        rx.feed(
            raw(
                seq,
                pid=str(4242 + seq),
                begin=[[rid, 0.5, *REST]],
                chunks=[[rid, 0, [400_000, 300_000, 200_000]]],
                usage=[[rid, 12, 3]],
                end=[[rid, 0.1, "ok", 200, "m"]],
            )
        )
    _, infos = rx.due(101.0)
    good = sorted(i.request_id for i in infos if i.request_id.startswith("good") and i.end_s is not None)
    assert good == [f"good{k}" for k in range(5)] and rx.counts["internal_errors"] == 0
