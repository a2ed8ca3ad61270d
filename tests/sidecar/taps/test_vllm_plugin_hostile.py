"""Hostile plugin datagrams: a bad row is rejected and counted, good rows next to it are kept."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from sidecar.attribution.events import Phase
from sidecar.contracts.vllm_wire import encode
from sidecar.taps.spans import TapOutput
from sidecar.taps.vllm_plugin import PluginReceiver
from tests.support import work_events


def raw(seq: int, pid: int = 7, wall: str = "1000.0", **parts: Any) -> bytes:
    """A datagram as text, so values JSON cannot write (Infinity, 1e400, 10**400) can be spliced in."""
    head = f'"v":1,"pid":{pid},"seq":{seq},"wall":{wall},"model":"tiny","live":true'
    body = "".join(f',"{k}":{v if isinstance(v, str) else json.dumps(v)}' for k, v in parts.items())
    return ("{" + head + body + "}").encode()


def receiver() -> PluginReceiver:
    return PluginReceiver(lambda unix_s: unix_s - 900.0, wall=lambda: 1000.0)


HUGE = "1" + "0" * 400  # an integer too large for a float: float() raises OverflowError


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("Infinity", "not_finite"),
        ("NaN", "not_finite"),
        ("1e400", "not_finite"),
        (HUGE, "not_finite"),
        ("-7", "negative"),
        ("1e30", "out_of_range"),
        ('"abc"', "wrong_type"),
        ("null", "wrong_type"),
    ],
)
def test_a_poison_number_in_one_row_rejects_that_row_and_keeps_the_good_rows(bad: str, reason: str) -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(
        raw(
            0,
            it="[0.0,1,15,0,0]",
            start=f'[["good",5,5,0.01],["bad",{bad},5,0.01],["good2",10,10,0.01]]',
        ),
        out,
    )
    assert sorted(e.request_id for e in work_events(out.events) if e.phase is Phase.PREFILL) == [
        "good",
        "good2",
    ]
    fin = TapOutput()
    rx.feed(
        raw(
            1,
            wall="1000.1",
            it="[0.0,2,0,0,0]",
            fin=f'[["good",5,2,0,0.01,0.05,{bad},"stop"],["good2",10,2,0,0.01,0.05,0.1,"stop"]]',
        ),
        fin,
    )
    assert [i.request_id for i in fin.infos] == ["good2"]
    assert rx.counts[f"rejected_{reason}"] == 2 and rx.counts["internal_errors"] == 0


@pytest.mark.parametrize("bad", ["Infinity", "1e400", HUGE, "-5", '"x"'])
def test_a_poison_iteration_is_dropped_and_the_rows_of_its_datagram_still_count(bad: str) -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(raw(0, it=f"[{bad},1,5,0,0]", start='[["a",5,5,0.01]]'), out)
    assert [e.request_id for e in work_events(out.events)] == ["a"] and rx.counts["iterations"] == 0
    assert sum(n for k, n in rx.counts.items() if k.startswith("rejected_")) == 1


@pytest.mark.parametrize("bad", ['"x"', "[]", "{}", "null", "7", '{"a":1}', "[[]]"])
def test_a_row_of_the_wrong_shape_is_rejected_alone_and_the_good_rows_beside_it_count(bad: str) -> None:
    """A row that is not a list (or a section that is not one) was a bad datagram whole: the good
    finish beside it was lost and its request stayed decoding, taking later iterations' work."""
    rx, out = receiver(), TapOutput()
    rx.feed(raw(0, it="[0.0,1,5,0,0]", start=f'[{bad},["a",5,5,0.01]]'), out)
    rx.feed(raw(1, wall="1000.02", it=bad, fin=f'[{bad},["a",5,3,0,0.01,0.05,0.1,"stop"]]'), out)
    rx.feed(raw(2, wall="1000.04", it="[0.0,1,0,0,0]", start=bad, fin=bad), out)
    assert [i.request_id for i in out.infos if i.end_s is not None] == ["a"]
    assert rx.counts["malformed"] == 0 and rx.counts["internal_errors"] == 0
    assert sum(n for k, n in rx.counts.items() if k.startswith("rejected_")) >= 2  # the bad rows at least
    later = TapOutput()
    rx.feed(raw(3, wall="1000.06", it="[0.0,1,0,0,0]"), later)
    assert work_events(later.events) == []  # "a" finished: no more decode work


@pytest.mark.parametrize("wall", ["Infinity", "1e400", HUGE, "4102444800.0", "-100000.0"])
def test_a_datagram_that_cannot_be_dated_is_rejected_whole_and_counted(wall: str) -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(raw(0, wall=wall, it="[0.0,1,5,0,0]", start='[["a",5,5,0.01]]'), out)
    assert out.events == [] and out.infos == []
    assert rx.counts["rejected_not_finite"] + rx.counts["rejected_bad_time"] == 1


def test_bad_ids_sched_and_gone_entries_are_rejected_one_by_one() -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(raw(0, it="[0.0,1,5,0,0]", start='[["",5,5,0.01],[42,5,5,0.01],["a",5,5,0.01]]'), out)
    rx.feed(raw(1, sched='[1,2,"x"]', gone='[null,"a"]'), out)
    rx.feed(raw(2, sched="[1,2,0.5]", gone='"not a list"'), out)
    assert rx.counts["rejected_bad_id"] == 3 and rx.counts["aborted"] == 1
    assert rx.counts["rejected_wrong_type"] == 1 and rx.counts["rejected_malformed"] == 1
    assert rx.sched == (1.0, 2.0, 0.5)


def test_a_repeated_start_or_finish_is_a_counted_duplicate_and_adds_no_work() -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(raw(0, it="[0.0,1,5,0,0]", start='[["a",5,5,0.01]]'), out)
    rx.feed(raw(1, wall="1000.02", it="[0.0,1,5,0,0]", start='[["a",5,5,0.01]]'), out)
    fin = '[["a",5,3,0,0.01,0.05,0.1,"stop"]]'
    rx.feed(raw(2, wall="1000.04", it="[0.0,1,0,0,0]", fin=fin), out)
    rx.feed(raw(3, wall="1000.06", it="[0.0,1,0,0,0]", fin=fin), out)
    assert [e.phase for e in work_events(out.events)] == [Phase.PREFILL, Phase.DECODE, Phase.DECODE]
    assert len(out.infos) == 1 and rx.counts["rejected_duplicate"] == 2


def test_sequence_numbers_cannot_poison_the_loss_counter() -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(raw(0, it="[0.0,1,5,0,0]", start='[["a",5,5,0.01]]'), out)
    rx.feed(raw(10**30, it="[0.0,1,0,0,0]"), out)  # a jump: a restart of the numbering, not 1e30 lost
    rx.feed(raw(1), out)  # back to the real stream: another jump
    four = raw(4, it="[0.0,1,0,0,0]")
    rx.feed(four, out)  # two datagrams lost
    rx.feed(raw(3), out)  # one of them came late
    n_events = len(work_events(out.events))
    rx.feed(four, out)  # replayed, the same bytes: dropped, no decode work added
    assert len(work_events(out.events)) == n_events
    assert (rx.counts["lost"], rx.counts["seq_jumps"], rx.counts["reordered"]) == (2, 2, 1)
    assert rx.counts["rejected_duplicate"] == 1


def test_a_datagram_forged_with_the_next_number_does_not_make_the_real_one_a_duplicate() -> None:
    """Duplicates are the same datagram again, not the same number: a forged datagram (its rows all
    refused) that took the sender's next number had made the real one a "duplicate", dropped with
    the request's finish."""
    rx, out = receiver(), TapOutput()
    rx.feed(raw(0, it="[0.0,1,5,0,0]", start='[["a",5,5,0.01]]'), out)
    rx.feed(raw(1, fin='[["a","NaN",1,0.0,0.01,0.02,0.03,"stop"]]'), out)  # forged: its row refused
    rx.feed(raw(1, fin='[["a",5,1,0.0,0.01,0.02,0.03,"stop"]]'), out)  # the sender's own
    assert [i.request_id for i in out.infos if i.end_s is not None] == ["a"]
    assert rx.counts["rejected_duplicate"] == 0 and rx.counts["lost"] == 0


def test_a_long_message_split_into_datagrams_of_one_number_is_taken_whole() -> None:
    """The plugin sends more than 150 starts or finishes of one iteration as several datagrams with
    the same number; all but the first were dropped as duplicates."""
    rx, out = receiver(), TapOutput()
    starts = [[f"chatcmpl-{i:04d}", 1, 1, 0.0] for i in range(400)]
    fins = [[f"chatcmpl-{i:04d}", 1, 2, 0.0, 0.01, 0.02, 0.03, "stop"] for i in range(400)]
    for seq, rows in (
        (0, {"it": [0.0, 400, 400, 0, 0], "start": starts}),
        (1, {"it": [0.0, 400, 0, 0, 0], "fin": fins}),
    ):
        parts = encode({"v": 1, "pid": 7, "seq": seq, "wall": 1000.0, "model": "tiny", "live": True, **rows})
        assert len(parts) == 3
        for part in parts:
            rx.feed(part, out)
    assert rx.counts["starts"] == 400 and rx.counts["finished"] == 400 and rx.counts["iterations"] == 2
    assert len({i.request_id for i in out.infos if i.end_s is not None}) == 400


def test_one_poison_datagram_costs_no_other_datagram_of_the_tick_over_real_udp() -> None:
    rx = PluginReceiver(lambda unix_s: unix_s, host="127.0.0.1", port=0)
    port = rx.start()
    now = time.time()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            good = '[["g{i}",10,1,0,0.01,0.05,0.1,"stop"]]'
            for i in range(20):
                tx.sendto(raw(2 * i, wall=f"{now}", live="false", fin=good.format(i=i)), ("127.0.0.1", port))
                poison = f'[["p{i}",10,{HUGE},0,0.01,0.05,0.1,"stop"]]'
                tx.sendto(
                    raw(2 * i + 1, wall=f"{now}", it=f"[{HUGE},1,1,0,0]", fin=poison), ("127.0.0.1", port)
                )
            tx.sendto(b"\x00garbage", ("127.0.0.1", port))
        infos: list[Any] = []
        deadline = time.monotonic() + 5
        while len(infos) < 20 and time.monotonic() < deadline:
            infos += rx.due(0.0)[1]
    finally:
        rx.stop()
    assert sorted(i.request_id for i in infos) == sorted(f"g{i}" for i in range(20))
    assert rx.counts["received"] == 40 and rx.counts["malformed"] == 1
    assert rx.counts["rejected_not_finite"] == 40 and rx.counts["internal_errors"] == 0


@pytest.mark.parametrize("ahead_s", [60.0, 3600.0])
def test_a_datagram_dated_after_it_was_read_is_taken_as_sent_then_and_counted(ahead_s: float) -> None:
    """The plugin shares the host's clock and sent the datagram before it was read: dated ahead (a
    clock stepped back, or a forgery), its iteration held the requests in flight that long and was
    then given a later window's energy."""
    rx, out = receiver(), TapOutput()  # reads at Unix 1000 (mono 100)
    rx.feed(raw(0, it="[0.0,1,15,0,0]", start='[["good",5,5,0.01]]'), out)
    ahead = TapOutput()
    rx.feed(raw(1, wall=str(1000.0 + ahead_s), it="[0.0,1,0,0,0]"), ahead)
    (step,) = [e for e in work_events(ahead.events) if e.request_id == "good"]
    assert step.phase is Phase.DECODE and step.t1_s == pytest.approx(100.0)  # not 100 + ahead_s
    assert rx.counts["wall_ahead"] == 1 and rx.counts["iterations"] == 2
    rx.feed(raw(2, wall="1000.5", it="[0.0,1,0,0,0]"), TapOutput())  # a little ahead: not counted
    assert rx.counts["wall_ahead"] == 1
