"""Datagrams forged with another pid end nothing of the engine that is sending (the plugin tap).

A fin of a request only another pid decodes is refused (``other_sender``), a process ended aborts
no request another decodes or that finished, 16 new pids at once do not push out a process that
sent a moment ago, and a new pid's datagram read first after a stall ends no one. Each case here
lost or changed a good request before.
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

    def tick(self) -> TapOutput:
        """The sweep after a tick that read the socket to its end, begun now."""
        out = TapOutput()
        self.rx.senders.sweep(self.wall_s - 900.0, out)
        return out

    def send(
        self, pid: int, seq: int, out: TapOutput | None = None, wall: float | None = None, **parts: Any
    ) -> TapOutput:
        sent = self.wall_s if wall is None else wall
        msg = {"v": 1, "pid": pid, "seq": seq, "wall": sent, "model": "m", "live": True, **parts}
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


def test_a_start_from_another_pid_of_a_request_decoding_aborts_nothing_when_that_pid_is_swept() -> None:
    e = Engine()
    e.send(7, 0, it=[0.0, 1, 20], start=[["X", 20, 20, 0.01]])
    e.send(666, 0, start=[["X", 1, 0, 0.0]])  # forged: pid 666's own copy
    infos = []
    for seq in range(1, 401):  # the engine decodes X for 8 s; pid 666 goes quiet and is swept
        e.wall_s += 0.02
        out = e.send(7, seq, it=[0.0, 1, 0])
        e.rx.senders.sweep(e.wall_s - 900.0, out)
        infos += out.infos
    assert infos == [] and e.rx.counts["senders_gone"] == 1 and "X" in e.rx.senders.get(7).decoding


def test_a_forged_start_sent_before_the_engines_own_does_not_take_the_request() -> None:
    """Adversarial probe: whichever pid started an id first owned it: the engine's start and fin
    were refused, and X ended aborted with 1 token when the forger was swept."""
    e = Engine()
    e.send(666, 0, start=[["X", 1, 0, 0.0]])
    e.send(7, 0, it=[0.0, 1, 20], start=[["X", 20, 20, 0.01]])
    infos = []
    for seq in range(1, 301):
        e.wall_s += 0.02
        fin = [["X", 20, 98, 0, 0.01, 5.9, 6.0, "stop"]] if seq == 300 else []
        out = e.send(7, seq, it=[0.0, 1, 0], fin=fin) if fin else e.send(7, seq, it=[0.0, 1, 0])
        e.rx.senders.sweep(e.wall_s - 900.0, out)
        infos += out.infos
    assert [(i.request_id, i.output_tokens) for i in infos] == [("X", 98)]


def test_two_engines_serving_one_id_both_step_it_and_the_second_fin_leaves_no_member_behind() -> None:
    """Data-parallel engines behind API servers of their own, a client reusing its X-Request-Id."""
    e = Engine()
    e.send(7, 0, it=[0.0, 1, 20], start=[["job", 20, 20, 0.01]])
    e.send(8, 0, it=[0.0, 1, 20], start=[["job", 20, 20, 0.01]])
    assert e.rx.counts["rejected_duplicate"] == 0
    e.wall_s += 0.02
    steps = e.send(8, 1, it=[0.0, 1, 0])
    assert [b.request_ids for b in steps.events if isinstance(b, StepBatch)] == [("job",)]
    e.send(7, 1, it=[0.0, 1, 0], fin=[["job", 20, 2, 0, 0.01, 0.02, 0.03, "stop"]])
    e.send(8, 2, it=[0.0, 1, 0], fin=[["job", 20, 3, 0, 0.01, 0.04, 0.05, "stop"]])
    assert e.rx.counts["rejected_duplicate"] == 1 and len(e.rx.senders.get(8).decoding) == 0


def test_a_new_pid_read_first_after_a_stall_ends_no_engine_whose_datagrams_wait_behind_it() -> None:
    """Adversarial probe: after a 6.2 s stall, a datagram of a new pid dated just before it was read
    (not "ahead") was read before the engine's waiting ones: the engine was ended as restarted."""
    e = Engine()
    e.send(7, 0, it=[0.0, 2, 20], start=[["A", 10, 10, 0.01], ["B", 10, 10, 0.01]])
    e.tick()  # a tick read the socket to its end at 1000.0
    e.wall_s = 1006.2  # then a stall; what was sent meanwhile is read now, in order
    out = e.send(666, 0, wall=1006.0)
    for seq in range(1, 300):
        e.send(7, seq, out, wall=1000.0 + 0.02 * seq, it=[0.0, 2, 0])
    assert out.infos == [] and e.rx.counts["restarts"] == 0
    assert sorted(e.rx.senders.get(7).decoding.ids()) == ["A", "B"]


def test_a_real_restart_a_tick_after_the_old_process_went_quiet_is_still_one() -> None:
    e = Engine()
    e.send(7, 0, it=[0.0, 1, 20], start=[["A", 10, 10, 0.01]])
    for _ in range(60):  # ticks keep reading an empty socket for 6 s
        e.wall_s += 0.1
        e.tick()
    out = e.send(8, 0, it=[0.0, 0, 0])
    assert e.rx.counts["restarts"] == 1 and [i.request_id for i in out.infos] == ["A"]


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
