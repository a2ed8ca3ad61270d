"""The scheduler hook's receiver on hand-made datagrams: exact steps, request ends, faults, claims."""

from __future__ import annotations

import socket
import time

import pytest

from sidecar.attribution.events import WORK_LOST, Phase, StepBatch
from sidecar.contracts.scheduler_wire import FinRow, Message, NewRow, StepRow, encode
from sidecar.taps.senders import MAX_SENDERS, QUIET_S
from sidecar.taps.spans import TapOutput
from sidecar.taps.vllm_hook import HookReceiver

WALL = 1000.0  # the receiver's clock is Unix time - 900


def rx(read_s: float = WALL) -> HookReceiver:
    """A receiver that reads every datagram at Unix time ``read_s`` (one dated after it is taken as sent
    then)."""
    return HookReceiver(lambda unix_s: unix_s - 900.0, wall=lambda: read_s)


def dgram(seq: int, *, pid: int = 7, wall: float = WALL, **sections: object) -> bytes:
    m = Message(
        pid,
        seq,
        wall,
        "tiny",
        *(list(sections.get(k, [])) for k in ("new", "steps", "fin", "gone")),
        tuple(sections.get("renew", ())),
    )  # type: ignore[call-overload]
    (data,) = encode(m)
    return data


def steps(out: TapOutput) -> list[StepBatch]:
    return [e for e in out.events if isinstance(e, StepBatch)]


def members(batch: StepBatch) -> list[tuple[str, Phase, float, float]]:
    return [
        (rid, Phase(int(p)), float(u), float(c))
        for rid, p, u, c in zip(
            batch.request_ids, batch.phase, batch.units, batch.context_tokens, strict=True
        )
    ]


def test_chunked_prefill_then_decode_is_exact_per_step() -> None:
    r, out = rx(), TapOutput()
    r.feed(
        dgram(
            0,
            new=[NewRow(0, "chatcmpl-a", 10, 0.5), NewRow(1, "chatcmpl-b", 4, 0.3)],
            steps=[
                StepRow(0.30, 0.20, [0, 1], [6, 4], [0, 0]),  # a: first chunk; b: whole prompt
                StepRow(0.20, 0.10, [0, 1], [4, 1], [6, 4]),  # a: last chunk; b: decodes
                StepRow(0.10, 0.00, [0, 1], [1, 1], [10, 5]),  # both decode
            ],
        ),
        out,
    )
    s0, s1, s2 = steps(out)
    assert (s0.t0_s, s0.t1_s) == pytest.approx((99.7, 99.8))
    assert members(s0) == [("a", Phase.PREFILL, 6, 21), ("b", Phase.PREFILL, 4, 10)]
    assert members(s1) == [("a", Phase.PREFILL, 4, 4 * 6 + 10), ("b", Phase.DECODE, 1, 5)]
    assert members(s2) == [("a", Phase.DECODE, 1, 11), ("b", Phase.DECODE, 1, 6)]
    assert all(b.check() is None for b in (s0, s1, s2))
    assert r.claims("a") and r.claims("b") and not r.claims("c")
    assert (r.counts["steps"], r.counts["members"]) == (3, 6)


def test_a_prefix_cache_hit_costs_only_the_tokens_computed() -> None:
    r, out = rx(), TapOutput()
    r.feed(dgram(0, new=[NewRow(0, "a", 100, 0.1)], steps=[StepRow(0.1, 0.0, [0], [36], [64])]), out)
    (s,) = steps(out)
    assert members(s) == [("a", Phase.PREFILL, 36, 36 * 64 + 36 * 37 / 2)]


def test_recompute_after_preemption_is_prefill_and_a_spec_rollback_is_not() -> None:
    r, out = rx(), TapOutput()
    r.feed(
        dgram(
            0,
            new=[NewRow(0, "a", 8, 0.5), NewRow(1, "b", 8, 0.5)],
            steps=[
                StepRow(0.5, 0.4, [0, 1], [8, 8], [0, 0]),
                StepRow(0.4, 0.3, [0, 1], [1, 4], [8, 8]),  # b: decode + 3 speculative tokens
                StepRow(0.3, 0.2, [0, 1], [1, 4], [9, 10]),  # b: 2 rejected: back from 12 to 10
                StepRow(0.2, 0.1, [0], [11], [0]),  # a preempted and resumed: prompt + 2 outputs + 1
            ],
        ),
        out,
    )
    *_, rollback, resumed = steps(out)
    assert members(rollback)[1] == ("b", Phase.DECODE, 4, 4 * 10 + 10)
    assert members(resumed) == [("a", Phase.PREFILL, 11, 66)]


def test_fin_makes_a_request_info_from_arrival_to_its_last_step() -> None:
    r, out = rx(WALL + 1.0), TapOutput()
    r.feed(dgram(0, new=[NewRow(0, "chatcmpl-a", 5, 1.0)], steps=[StepRow(0.5, 0.4, [0], [5], [0])]), out)
    r.feed(
        dgram(1, wall=WALL + 0.1, steps=[StepRow(0.4, 0.3, [0], [1], [5])], fin=[FinRow(0, 2, "length")]), out
    )
    (info,) = out.infos
    assert (info.request_id, info.model, info.operation, info.prompt_tokens, info.output_tokens) == (
        "a", "tiny", "chat", 5, 2,
    )  # fmt: skip
    assert (info.start_s, info.end_s) == pytest.approx((99.0, 99.8))
    assert info.attributes == {"vllm.request_id": "chatcmpl-a", "finish_reason": "length"}


def test_an_aborted_request_ends_with_the_tokens_it_sampled() -> None:
    r, out = rx(), TapOutput()
    r.feed(
        dgram(
            0,
            new=[NewRow(0, "a", 5, 1.0)],
            steps=[StepRow(0.5, 0.4, [0], [5], [0]), StepRow(0.4, 0.3, [0], [1], [5])],
        ),
        out,
    )
    r.feed(dgram(1, gone=[0]), out)
    (info,) = out.infos
    assert (info.output_tokens, info.attributes["finish_reason"], info.end_s) == (
        2,
        "abort",
        pytest.approx(99.7),
    )
    assert r.counts["aborted"] == 1


def test_a_member_after_its_fin_still_counts_and_an_unknown_one_is_adopted() -> None:
    """A member without its new row (the sidecar restarted while it ran) is a request of its own: it
    takes its share of the step instead of leaving it to the members beside it."""
    r, out = rx(), TapOutput()
    r.feed(
        dgram(
            0,
            new=[NewRow(0, "a", 5, 1.0)],
            steps=[StepRow(0.5, 0.4, [0], [5], [0])],
            fin=[FinRow(0, 1, "stop")],
        ),
        out,
    )
    r.feed(dgram(1, steps=[StepRow(0.4, 0.3, [0, 9], [1, 1], [5, 3])]), out)
    assert members(steps(out)[-1]) == [("a", Phase.DECODE, 1, 6), ("unknown-7-9", Phase.DECODE, 1, 4)]
    assert (r.counts["after_fin"], r.counts["unknown_member"]) == (1, 1)
    r.feed(dgram(2, steps=[StepRow(0.3, 0.2, [9], [1], [4])], fin=[FinRow(9, 6, "stop")]), out)
    assert (
        members(steps(out)[-1]) == [("unknown-7-9", Phase.DECODE, 1, 5)] and r.counts["unknown_member"] == 1
    )
    adopted = out.infos[-1]
    assert (adopted.request_id, adopted.output_tokens, adopted.attributes[WORK_LOST]) == (
        "unknown-7-9",
        6,
        "true",
    )


def test_a_new_pid_heard_after_the_old_one_went_quiet_is_a_restart_that_ends_its_requests() -> None:
    r, out = rx(read_s=2000.0), TapOutput()
    r.feed(dgram(0, new=[NewRow(0, "a", 5, 1.0)], steps=[StepRow(0.5, 0.4, [0], [5], [0])]), out)
    later = WALL + QUIET_S  # vLLM takes longer than that to start again
    b_step = StepRow(0.1, 0.0, [0], [3], [0])
    r.feed(dgram(0, pid=8, wall=later, new=[NewRow(0, "b", 3, 0.1)], steps=[b_step]), out)
    assert [(i.request_id, i.attributes["finish_reason"]) for i in out.infos] == [("a", "abort")]
    assert out.infos[0].end_s == pytest.approx(100.0 - 0.4)  # the end of its last step, not the restart
    assert members(steps(out)[-1])[0][0] == "b"  # idx 0 now means the new engine's request
    assert r.counts["restarts"] == 1 and len(r.senders) == 1 and r.live == 1


def test_a_datagram_with_another_pid_ends_nothing_of_a_process_that_is_sending() -> None:
    """A second engine on the port (data parallel), or one datagram forged with any pid: both kept."""
    r, out = rx(read_s=2000.0), TapOutput()
    r.feed(dgram(0, new=[NewRow(0, "a", 5, 1.0)], steps=[StepRow(0.5, 0.4, [0], [5], [0])]), out)
    r.feed(dgram(0, pid=666, wall=WALL + 0.1, new=[NewRow(0, "forged", 3, 0.1)]), out)
    a_step = StepRow(0.1, 0.0, [0], [1], [5])
    r.feed(dgram(1, wall=WALL + 0.2, steps=[a_step], fin=[FinRow(0, 2, "stop")]), out)
    (info,) = out.infos
    assert (info.request_id, info.attributes["finish_reason"], info.output_tokens) == ("a", "stop", 2)
    assert members(steps(out)[-1]) == [("a", Phase.DECODE, 1, 6)]  # idx 0 is still this process's request
    assert r.counts["restarts"] == 0 and len(r.senders) == 2


def test_a_process_quiet_while_another_speaks_ends_at_the_tick_one_alone_is_kept() -> None:
    r, out = rx(read_s=2000.0), TapOutput()
    r.feed(dgram(0, new=[NewRow(0, "a", 5, 1.0)], steps=[StepRow(0.5, 0.4, [0], [5], [0])]), out)
    r.due(100.0 + 10 * QUIET_S)  # alone: an engine that is down is not yet known to be restarted
    r.feed(dgram(0, pid=8, wall=WALL + 1.0, new=[NewRow(0, "b", 3, 0.1)]), out)
    assert out.infos == [] and r.live == 2
    _, infos = r.due(100.0 + QUIET_S - 0.1)
    assert infos == []
    _, infos = r.due(100.0 + QUIET_S)  # pid 7 sent nothing for QUIET_S while pid 8 spoke after it
    assert [(i.request_id, i.attributes["finish_reason"]) for i in infos] == [("a", "abort")]
    assert r.counts["senders_gone"] == 1 and r.live == 1
    _, infos = r.due(100.0 + 100 * QUIET_S)
    assert infos == [] and len(r.senders) == 1  # pid 8, alone now, is kept


def test_requests_in_flight_are_capped_over_all_processes_the_biggest_holder_pays() -> None:
    r, out = HookReceiver(lambda unix_s: unix_s - 900.0, wall=lambda: 2000.0, max_requests=4), TapOutput()
    r.feed(dgram(0, new=[NewRow(0, "good", 5, 1.0)]), out)
    r.feed(dgram(0, pid=666, wall=WALL + 0.1, new=[NewRow(i, f"junk{i}", 3, 0.1) for i in range(3)]), out)
    r.feed(dgram(1, wall=WALL + 0.2, new=[NewRow(1, "next", 5, 0.1)]), out)
    engine, flooder = r.senders
    assert r.counts["evicted"] == 1 and r.live == 4 and len(flooder.live) == 2
    assert [q.request_id for q in engine.live.values()] == ["good", "next"]


def test_more_pids_than_the_cap_while_all_send_refuse_the_new_one_and_end_nothing() -> None:
    r, out = rx(read_s=2000.0), TapOutput()
    for pid in range(MAX_SENDERS + 1):
        r.feed(dgram(0, pid=100 + pid, wall=WALL + pid * 0.01, new=[NewRow(0, f"r{pid}", 3, 0.1)]), out)
    assert out.infos == [] and r.counts["rejected_too_many_senders"] == 1
    assert len(r.senders) == MAX_SENDERS and r.live == MAX_SENDERS


def test_sequence_gaps_count_lost_datagrams_and_a_forged_jump_is_no_restart() -> None:
    r, out = rx(read_s=2000.0), TapOutput()
    r.feed(dgram(0, new=[NewRow(0, "a", 5, 1.0)]), out)
    r.feed(dgram(4), out)
    assert r.counts["lost"] == 3
    r.feed(dgram(2), out)  # late: processed, not lost twice
    assert (r.counts["lost"], r.counts["reordered"]) == (3, 1)
    r.feed(dgram(10**12), out)  # one forged number: a jump of the numbering, not 1e12 lost, not a restart
    assert (r.counts["lost"], r.counts["seq_jumps"], r.counts["restarts"]) == (3, 1, 0)
    assert out.infos == []  # "a" is still in flight
    r.feed(dgram(0, wall=WALL + QUIET_S), out)  # the same pid starting over (a container restart)
    assert r.counts["restarts"] == 1
    assert [(i.request_id, i.attributes["finish_reason"]) for i in out.infos] == [("a", "abort")]


def test_the_same_pid_from_0_again_while_it_is_sending_is_refused_not_a_restart() -> None:
    """One datagram forged with the engine's pid and number 0 ended every request it had in flight."""
    r, out = rx(read_s=2000.0), TapOutput()  # heard from number 9000 on (the sidecar started later)
    r.feed(dgram(9000, new=[NewRow(0, "a", 5, 1.0)], steps=[StepRow(0.5, 0.4, [0], [5], [0])]), out)
    r.feed(dgram(9001, wall=WALL + 0.1, steps=[StepRow(0.1, 0.0, [0], [1], [5])]), out)
    r.feed(dgram(0, wall=WALL + 0.2, gone=[0], new=[NewRow(0, "forged", 3, 0.1)]), out)
    assert out.infos == [] and r.counts["rejected_restart"] == 1 and r.counts["restarts"] == 0
    a_step = StepRow(0.1, 0.0, [0], [1], [6])
    r.feed(dgram(9002, wall=WALL + 0.3, steps=[a_step], fin=[FinRow(0, 3, "stop")]), out)
    (info,) = out.infos
    assert (info.request_id, info.attributes["finish_reason"], info.output_tokens) == ("a", "stop", 3)
    assert {m[0] for b in steps(out) for m in members(b)} == {"a"}
    r.feed(dgram(0, wall=WALL + 0.3 + QUIET_S, new=[NewRow(0, "b", 3, 0.1)]), out)  # restarted: quiet first
    assert r.counts["restarts"] == 1 and r.live == 1


def test_a_lost_datagram_marks_the_requests_then_in_flight_as_work_lost() -> None:
    """Their steps may be in it: a record without them would be a share too low, or 0 J."""
    r, out = rx(), TapOutput()
    r.feed(dgram(0, new=[NewRow(0, "a", 5, 1.0)], steps=[StepRow(0.5, 0.4, [0], [5], [0])]), out)
    r.feed(dgram(2, new=[NewRow(1, "b", 5, 0.1)], steps=[StepRow(0.1, 0.0, [0, 1], [1, 5], [5, 0])]), out)
    r.feed(dgram(3, fin=[FinRow(0, 3, "stop"), FinRow(1, 1, "stop")]), out)
    assert r.counts["lost"] == 1
    assert {i.request_id: i.attributes.get(WORK_LOST) for i in out.infos} == {"a": "true", "b": None}


def test_a_replayed_datagram_is_a_counted_duplicate_and_adds_no_work() -> None:
    r, out = rx(), TapOutput()
    first = dgram(0, new=[NewRow(0, "a", 5, 1.0)], steps=[StepRow(0.5, 0.4, [0], [5], [0])])
    r.feed(first, out)
    r.feed(dgram(1, steps=[StepRow(0.4, 0.3, [0], [1], [5])]), out)
    r.feed(first, out)  # seq 0 again, remembered: a replay, not a restart
    assert len(steps(out)) == 2 and r.counts["rejected_duplicate"] == 1 and r.counts["restarts"] == 0


def test_malformed_datagrams_are_counted_and_cost_nothing_else() -> None:
    r, out = rx(), TapOutput()
    r.feed(b"garbage", out)
    r.feed(b'{"v":1,"pid":1,"seq":0,"wall":1000.0}', out)  # a plugin datagram: not this wire
    r.feed(dgram(0, new=[NewRow(0, "a", 5, 1.0)], steps=[StepRow(0.5, 0.4, [0], [5], [0])]), out)
    assert r.counts["malformed"] == 1 and r.counts["rejected_malformed"] == 1
    assert len(steps(out)) == 1


def test_due_drains_the_socket_without_blocking() -> None:
    r = HookReceiver(lambda unix_s: unix_s - 900.0, port=0, wall=lambda: WALL)
    port = r.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(
                dgram(0, new=[NewRow(0, "a", 5, 1.0)], steps=[StepRow(0.5, 0.4, [0], [5], [0])]),
                ("127.0.0.1", port),
            )
            s.sendto(b"junk", ("127.0.0.1", port))
        deadline = time.monotonic() + 2.0
        events: list[object] = []
        while not events and time.monotonic() < deadline:
            events, _ = r.due(0.0)  # type: ignore[assignment]
        assert len(events) == 1 and r.counts["received"] == 1
        r.due(0.0)
        assert r.counts["malformed"] == 1
        assert r.due(0.0) == ([], [])  # nothing waiting: returns at once
    finally:
        r.stop()


def test_a_short_cpu_gap_after_a_step_is_its_members_presence_and_a_long_pause_stays_idle() -> None:
    """The floor drawn while the engine handles a step's output goes to that step's members."""
    r, out = rx(), TapOutput()
    r.feed(
        dgram(
            0,
            new=[NewRow(0, "chatcmpl-a", 4, 2.0), NewRow(1, "chatcmpl-b", 4, 2.0)],
            steps=[
                StepRow(2.00, 1.90, [0, 1], [4, 4], [0, 0]),
                StepRow(1.88, 1.80, [0], [1], [4]),  # 20 ms CPU gap before it: a and b were present
                StepRow(0.10, 0.00, [0], [1], [5]),  # 1.7 s pause: idle, nobody's
            ],
        ),
        out,
    )
    s0, gap, s1, s2 = steps(out)
    assert (gap.t0_s, gap.t1_s) == pytest.approx((s0.t1_s, s1.t0_s))
    assert gap.request_ids == ("a", "b") and gap.steps == 0.0
    assert [b.timed for b in (s0, gap, s1)] == [True, False, True]  # steps as vLLM ran them; a gap is none
    assert gap.units.sum() == 0.0 and gap.context_tokens.sum() == 0.0
    assert s2.t0_s == pytest.approx(WALL - 900.0 - 0.10)


def test_back_to_back_steps_a_microsecond_apart_by_rounding_make_no_gap_event() -> None:
    """The hook rounds times to 1 us: a 1 us "gap" between back-to-back steps is not CPU time."""
    r, out = rx(), TapOutput()
    r.feed(
        dgram(
            0,
            new=[NewRow(0, "chatcmpl-a", 4, 1.0)],
            steps=[StepRow(0.3, 0.2, [0], [4], [0]), StepRow(0.199999, 0.1, [0], [1], [4])],
        ),
        out,
    )
    assert [b.steps for b in steps(out)] == [1.0, 1.0]


def test_a_renew_never_brings_back_a_request_that_ended() -> None:
    """A renewed row of an idx the receiver has finished (still recent) adds nothing."""
    r, out = rx(), TapOutput()
    row = NewRow(0, "chatcmpl-a", 5, 1.0)
    r.feed(dgram(0, new=[row], steps=[StepRow(0.9, 0.8, [0], [5], [0])], fin=[FinRow(0, 1, "stop")]), out)
    r.feed(dgram(1, renew=[row]), out)
    assert r.live == 0 and r.counts["new_renewed"] == 0 and [i.request_id for i in out.infos] == ["a"]
