"""Datagrams forged with another pid end nothing of the engine that is sending (the plugin tap).

A request lives in one engine process: a start of it from another pid is a duplicate, a fin of it
from another pid is refused (``other_sender``), and 16 new pids at once do not push out a process
that sent a moment ago. Each case here lost or changed a good request before.
"""

from __future__ import annotations

import json
from typing import Any

from sidecar.attribution.events import StepBatch
from sidecar.taps.spans import TapOutput
from sidecar.taps.vllm_plugin import PluginReceiver

START = 1000.0  # Unix s; the tap's clock is 900 s behind


class Engine:
    """A plugin receiver and a wall clock the datagrams are dated by."""

    def __init__(self) -> None:
        self.wall_s = START
        self.rx = PluginReceiver(lambda unix_s: unix_s - 900.0, wall=lambda: self.wall_s)

    def send(self, pid: int, seq: int, out: TapOutput | None = None, **parts: Any) -> TapOutput:
        msg = {"v": 1, "pid": pid, "seq": seq, "wall": self.wall_s, "model": "m", "live": True, **parts}
        out = TapOutput() if out is None else out
        self.rx.feed(json.dumps(msg).encode(), out)
        return out


def test_a_fin_from_another_pid_is_refused_and_the_real_fin_ends_the_request() -> None:
    e = Engine()
    e.send(7, 0, it=[0.0, 2, 20], start=[["X", 10, 10, 0.01], ["Y", 10, 10, 0.01]])
    forged = e.send(666, 0, fin=[["X", 1, 1, 0, 0, 0, 0.001, "stop"]])
    assert forged.infos == [] and e.rx.counts["rejected_other_sender"] == 1
    e.wall_s += 0.02
    real = e.send(7, 1, it=[0.0, 2, 0], fin=[["X", 10, 3, 0, 0.01, 0.03, 0.05, "stop"]])
    assert [(i.request_id, i.output_tokens) for i in real.infos] == [("X", 3)]
    e.wall_s += 0.02
    later = e.send(7, 2, it=[0.0, 1, 0])
    batches = [b for b in later.events if isinstance(b, StepBatch)]
    assert [b.request_ids for b in batches] == [("Y",)] and e.rx.counts["rejected_duplicate"] == 0


def test_a_start_from_another_pid_of_a_request_decoding_is_a_duplicate_not_an_abort_later() -> None:
    e = Engine()
    e.send(7, 0, it=[0.0, 1, 20], start=[["X", 20, 20, 0.01]])
    e.send(666, 0, start=[["X", 1, 0, 0.0]])
    assert e.rx.counts["rejected_duplicate"] == 1
    infos = []
    for seq in range(1, 401):  # the engine decodes X for 8 s; pid 666 goes quiet and is swept
        e.wall_s += 0.02
        out = e.send(7, seq, it=[0.0, 1, 0])
        e.rx.senders.sweep(e.wall_s - 900.0, out)
        infos += out.infos
    assert infos == [] and e.rx.counts["senders_gone"] == 1 and "X" in e.rx.senders.get(7).decoding


def test_sixteen_new_pids_at_once_do_not_push_out_the_engine_that_just_sent() -> None:
    e = Engine()
    starts = [["A", 10, 10, 0.01], ["B", 10, 10, 0.01], ["C", 10, 10, 0.01]]
    out = e.send(7, 0, it=[0.0, 3, 30], start=starts)
    for pid in range(1000, 1016):
        e.wall_s += 0.00005
        e.send(pid, 0, out)
    e.wall_s += 0.018
    e.send(7, 1, out, it=[0.0, 3, 0])
    assert out.infos == [] and e.rx.counts["rejected_too_many_senders"] == 1
    assert sorted(e.rx.senders.get(7).decoding.ids()) == ["A", "B", "C"]


def test_a_datagram_dated_an_hour_back_leaves_the_token_history_in_time_order() -> None:
    e = Engine()
    e.rx.tokens.started_wall_s = 0.0
    seq = 0
    for _ in range(7):
        e.wall_s += 0.1
        e.send(7, seq, it=[0.0, 100, 0])
        seq += 1
    assert e.rx.tokens_until(START + 0.35) == (0, 300)
    stale = {"v": 1, "pid": 999, "seq": 0, "wall": e.wall_s - 3600, "model": "m", "live": True}
    e.rx.feed(json.dumps({**stale, "it": [0.0, 0, 0]}).encode(), TapOutput())
    for _ in range(6):
        e.wall_s += 0.1
        e.send(7, seq, it=[0.0, 100, 0])
        seq += 1
    assert e.rx.tokens_until(START + 0.35) == (0, 300)
