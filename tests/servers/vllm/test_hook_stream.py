"""The scheduler hook's step stream (vLLM-free): pairing, async overlap, finishes held, flushing, ids."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from servers.vllm.hook_stream import StepStream, external_id, wire_id
from sidecar.contracts.scheduler_wire import FinRow, Message, NewRow, StepRow, decode


@dataclass
class FakeRequest:
    num_prompt_tokens: int
    arrival_time: float


class Clock:
    def __init__(self) -> None:
        self.t = 10.0

    def __call__(self) -> float:
        return self.t


def stream(flush_s: float = 0.02) -> tuple[StepStream, list[Message], Clock]:
    sent: list[Message] = []
    clock = Clock()
    s = StepStream(
        "tiny", ("127.0.0.1", 9), flush_s=flush_s, clock=clock, wall=lambda: 1000.0 + clock.t,
        send=lambda data: sent.append(decode(data)),
    )  # fmt: skip
    return s, sent, clock


REQS = {"chatcmpl-a-0123abcd": FakeRequest(10, 1009.5), "chatcmpl-b-89abcdef": FakeRequest(4, 1009.9)}


def test_external_id_strips_vllms_random_suffix_only() -> None:
    assert external_id("chatcmpl-x-0123abcd") == "chatcmpl-x"
    assert external_id("cmpl-x-0-0123abcd") == "cmpl-x-0"
    assert external_id("chatcmpl-x-0123abcd", randomized=False) == "chatcmpl-x-0123abcd"
    assert external_id("plain") == "plain"


def test_a_synchronous_step_is_sent_with_its_new_members_at_once() -> None:
    s, sent, clock = stream()
    a, b = REQS
    s.scheduled("out1", 10.0, [a, b], [6, 4], [0, 0], REQS.__getitem__)
    clock.t = 10.05
    s.ended("out1", 10.05)
    s.maybe_flush(idle=False)
    (m,) = sent
    assert m.new == [NewRow(0, "chatcmpl-a", 10, 0.55), NewRow(1, "chatcmpl-b", 4, 0.15)]
    assert m.steps == [StepRow(0.05, 0.0, [0, 1], [6, 4], [0, 0])]
    assert (m.seq, m.model) == (0, "tiny")


def test_short_steps_are_batched_until_flush_s_and_sent_when_idle() -> None:
    s, sent, clock = stream(flush_s=0.02)
    a, _ = REQS
    s.scheduled(1, 10.0, [a], [10], [0], REQS.__getitem__)
    clock.t = 10.005
    s.ended(1, 10.005)
    s.maybe_flush(idle=False)  # new member: sent at once
    for i in range(2, 5):
        s.scheduled(i, clock.t, [a], [1], [8 + i], REQS.__getitem__)
        clock.t += 0.005
        s.ended(i, clock.t)
        s.maybe_flush(idle=False)
    assert [len(m.steps) for m in sent] == [1]  # three short decode steps wait (15 ms < 20 ms)
    s.scheduled(5, clock.t, [a], [1], [13], REQS.__getitem__)
    clock.t += 0.02  # the oldest waiting step is now 25 ms old
    s.ended(5, clock.t)
    s.maybe_flush(idle=False)
    assert [len(m.steps) for m in sent] == [1, 4]
    s.scheduled(6, clock.t, [a], [1], [14], REQS.__getitem__)
    clock.t += 0.001
    s.ended(6, clock.t)
    s.maybe_flush(idle=True)
    assert [len(m.steps) for m in sent] == [1, 4, 1] and [m.seq for m in sent] == [0, 1, 2]


def test_with_async_scheduling_a_step_starts_when_the_previous_one_ends() -> None:
    s, sent, clock = stream()
    a, _ = REQS
    s.scheduled("n1", 10.00, [a], [10], [0], REQS.__getitem__)
    s.scheduled("n2", 10.01, [a], [1], [10], REQS.__getitem__)  # scheduled while n1 runs
    clock.t = 10.05
    s.ended("n1", 10.05)
    clock.t = 10.08
    s.ended("n2", 10.08)
    s.flush()
    steps = [st for m in sent for st in m.steps]
    assert [(round(10.08 - st.t0_ago_s, 6), round(10.08 - st.t1_ago_s, 6)) for st in steps] == [
        (10.0, 10.05),
        (10.05, 10.08),
    ]


def test_a_finish_waits_until_every_step_scheduled_before_it_has_ended() -> None:
    s, sent, clock = stream()
    a, b = REQS
    s.scheduled("n1", 10.0, [a, b], [10, 4], [0, 0], REQS.__getitem__)
    s.scheduled("n2", 10.01, [a, b], [1, 1], [10, 4], REQS.__getitem__)  # b rides along once more
    clock.t = 10.05
    s.ended("n1", 10.05)
    assert s.request(b) is REQS[b]
    s.finished(b, 1, "length", aborted=False)  # found when n1's output came back
    s.maybe_flush(idle=False)
    assert [m.fin for m in sent] == [[]]
    clock.t = 10.08
    s.ended("n2", 10.08)
    s.finished(a, 2, "abort", aborted=True)
    s.maybe_flush(idle=False)
    assert sent[-1].fin == [FinRow(1, 1, "length")] and sent[-1].gone == [0]
    assert s.request(a) is None and s.request(b) is None


def test_parallel_sampling_children_are_announced_on_arrival_and_one_never_scheduled_leaves_gone() -> None:
    """Under a full batch vLLM may run child 0 to its end before child 1 is first scheduled; the
    sidecar ends the parent's record with its last child, so it hears of both before either ends."""
    s, sent, clock = stream()
    kids = {f"{i}_cmpl-par-0-0123abcd": FakeRequest(30, 1009.5) for i in range(3)}
    plain = "cmpl-solo-0-89abcdef"
    for engine_id in [*kids, plain]:
        s.arrived(engine_id, kids.get(engine_id, FakeRequest(4, 1009.9)))
    c0, c1, c2 = kids
    s.arrived(c0, kids[c0])  # announced once
    s.scheduled("n1", 10.0, [c0], [30], [0], kids.__getitem__)  # a batch of one: child 0 alone
    clock.t = 10.05
    s.ended("n1", 10.05)
    s.finished(c0, 1, "length", aborted=False)
    s.maybe_flush(idle=False)
    (m,) = sent  # the children's new rows came before any step or finish
    assert [row.request_id for row in m.new] == ["0_cmpl-par-0", "1_cmpl-par-0", "2_cmpl-par-0"]
    assert [step.idx for step in m.steps] == [[0]] and m.fin == [FinRow(0, 1, "length")]
    s.scheduled("n2", 10.05, [c1], [30], [0], kids.__getitem__)  # child 1's first step: known already
    s.finished(c2, 0, "abort", aborted=True)  # child 2 left the queue: gone, never scheduled
    clock.t = 10.1
    s.ended("n2", 10.1)
    s.flush()
    assert sent[-1].new == [] and sent[-1].steps[0].idx == [1] and sent[-1].gone == [2]
    assert s.request(plain) is None  # a request of its own is announced at its first step, as before


def test_a_request_never_scheduled_sends_nothing_and_a_lost_batch_is_counted() -> None:
    s, sent, _ = stream()
    s.finished("never-seen", 0, "abort", aborted=True)
    s.scheduled("n1", 10.0, [], [], [], REQS.__getitem__)
    s.ended("other", 10.1)  # never scheduled here: counted, n1 stays in flight
    s.scheduled("n2", 10.1, [], [], [], REQS.__getitem__)
    s.ended("n2", 10.2)  # n1 never came back: counted as n2 ends
    s.flush()
    assert sent == [] and s.unpaired == 2


def test_a_batch_whose_scheduling_failed_costs_no_later_step() -> None:
    """Adversarial probe: under async scheduling one scheduled() that raised (caught: the batch never
    entered the queue) made its end pop the queue empty looking for it, the running batch too; every
    later batch was then unpaired: 0 steps of 199 good ones."""
    s, sent, clock = stream()
    a, _ = REQS
    keys = [object() for _ in range(12)]  # vLLM's scheduler outputs: matched by identity
    s.scheduled(keys[1], 10.00, [a], [10], [0], REQS.__getitem__)
    s.ended(object(), 10.01)  # its scheduled() failed: never in flight here
    for k in range(2, 12):
        s.scheduled(keys[k], 10.0 + 0.01 * k, [a], [1], [10 + k], REQS.__getitem__)
        s.ended(keys[k - 1], 10.01 + 0.01 * k)
    clock.t = 11.0
    s.flush()
    assert sum(len(m.steps) for m in sent) == 10 and s.unpaired == 1


def test_a_real_socket_sends_and_send_errors_are_counted_not_raised() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5.0)
        s = StepStream("tiny", rx.getsockname())
        a, _ = REQS
        for i in range(3):
            s.scheduled(i, 1.0, [a], [1], [10 + i], REQS.__getitem__)
            s.ended(i, 1.1)
            s.flush()
        got = [decode(rx.recv(65536)) for _ in range(3)]
    assert [m.seq for m in got] == [0, 1, 2] and [m.steps[0].computed_before for m in got] == [
        [10],
        [11],
        [12],
    ]
    assert s.sent == 3
    lost = StepStream("tiny", ("127.0.0.1", 1))  # nobody listens
    for i in range(3):
        lost.scheduled(i, 1.0, [a], [1], [10 + i], REQS.__getitem__)
        lost.ended(i, 1.1)
        lost.flush()
    assert lost.sent + lost.dropped == 3


def test_new_rows_are_sent_again_in_the_next_three_messages_while_in_flight_never_after_the_end() -> None:
    """``renew``: a datagram lost on the way must not leave the sidecar without a request's id. Each
    new row rides again in the next RENEW_SENDS messages, dated anew; not once its request ended, and
    not at all for one that ended before its row was first sent."""
    s, sent, clock = stream()
    a, b = REQS
    c = "chatcmpl-c-00000000"
    reqs = {**REQS, c: FakeRequest(3, 1010.0)}

    def step(key: int, members: list[str], end: str | None = None) -> None:
        s.scheduled(key, clock.t, members, [1] * len(members), [0] * len(members), reqs.__getitem__)
        if end is not None:
            s.finished(end, 1, "length", aborted=False)
        clock.t += 0.03
        s.ended(key, clock.t)
        s.maybe_flush(idle=True)

    for key in range(1, 6):  # a's new row with its first step, then four more messages
        step(key, [a])
    assert [[r.request_id for r in m.new] for m in sent] == [["chatcmpl-a"], [], [], [], []]
    assert [[r.request_id for r in m.renew] for m in sent] == [
        [],
        ["chatcmpl-a"],
        ["chatcmpl-a"],
        ["chatcmpl-a"],
        [],
    ]
    assert sent[1].renew[0] == NewRow(0, "chatcmpl-a", 10, 0.56)  # dated anew: arrived 0.56 s before
    step(6, [a, b])
    step(7, [a, b])
    step(8, [a], end=b)  # b's fin: not sent again from here on
    step(9, [a])
    assert [[r.request_id for r in m.renew] for m in sent[5:]] == [[], ["chatcmpl-b"], [], []]
    assert [r.idx for r in sent[7].fin] == [1]
    step(10, [c], end=c)  # c ends before its new row is first sent
    step(11, [a])
    assert [r.request_id for r in sent[-2].new] == ["chatcmpl-c"] and not sent[-1].renew


def test_an_id_the_wire_cannot_take_is_sent_as_one_it_can() -> None:
    """Adversarial probe: a client's X-Request-Id of 300 characters, or with a tab or newline, went on
    the wire as it was: the sidecar refused the row and the request's steps went under unknown-<pid>."""
    from sidecar.taps.vllm_hook_rows import parse_new

    long_id, tabbed = "chatcmpl-" + "x" * 300, "chatcmpl-a\tb\nc"
    for raw in (long_id, tabbed):
        sent = wire_id(raw)
        assert 0 < len(sent) <= 256 and sent.isprintable() and parse_new([0, sent, 3, 0.0]).request_id == sent
    assert wire_id(long_id) != wire_id(long_id + "y") and wire_id("chatcmpl-ok") == "chatcmpl-ok"


def test_the_longest_client_id_goes_on_the_wire_as_it_is() -> None:
    """Adversarial probe: an id over 256 characters was cut, so ``chatcmpl-`` and a client's id of
    248..256 characters (which the sidecar's API takes) was filed under a hash, its record lost."""
    from sidecar.taps.vllm_hook_rows import parse_new
    from sidecar.taps.vllm_span_format import checked_id

    # the longest client id in each form vLLM gives it, pooling and responses too (a response's id
    # is the client's, its prefix included)
    x, resp = "x" * 256, "resp_" + "x" * 251
    for longest in (f"chatcmpl-{x}", f"cmpl-{x}-0", f"12_chatcmpl-{x}", f"embd-{x}-0", f"{resp}_0"):
        assert wire_id(longest) == longest and parse_new([0, longest, 3, 0.0]).request_id == longest
    for over in ("chatcmpl-" + "x" * 257, "cmpl-" + "x" * 257 + "-0", "x" * 257):
        sent = wire_id(over)  # cut: the client's id it names fits
        assert len(sent) == 256 and checked_id(sent, "id")[1].endswith(sent[-9:])


def test_a_step_too_big_for_any_datagram_is_counted_not_dropped_silently() -> None:
    """Adversarial probe: a step of 4,096 members at six-digit indices fits no datagram; it was
    dropped and nothing said so."""
    s, sent, clock = stream()
    members = [f"r{k}" for k in range(4096)]
    reqs = {m: FakeRequest(10, 1009.5) for m in members}
    s._next_idx = 100_000
    key = object()
    s.scheduled(key, 10.0, members, [1] * 4096, [12_345] * 4096, reqs.__getitem__)
    s.ended(key, 10.05)
    clock.t = 11.0
    s.flush()
    assert s.too_big == 1 and not any(m.steps for m in sent) and sum(len(m.new) for m in sent) == 4096
