"""A vLLM restart seen by the plugin receiver ends the old process's requests in flight at once."""

from __future__ import annotations

import pytest

from sidecar.attribution.events import WORK_LOST, StepBatch
from sidecar.taps.senders import QUIET_S
from sidecar.taps.spans import TapOutput
from tests.sidecar.taps.test_vllm_plugin import msg, receiver
from tests.support import work_events


def test_a_new_pid_ends_the_requests_in_flight_as_aborted_and_counts_them() -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(msg(0, [0.0, 2, 10, 0, 0], start=[["chatcmpl-a", 5, 5, 0.01], ["b", 7, 7, 0.01]]), out)
    rx.feed(msg(1, [0.0, 2, 0, 0, 0], wall=1000.02), out)  # one decode step each: 2 tokens so far
    assert out.infos == []
    fresh = TapOutput()
    rx.feed(msg(0, [0.0, 0, 0, 0, 0], pid=8, wall=1006.0), fresh)  # vLLM restarted (quiet for 5 s)
    ended = {i.request_id: i for i in fresh.infos}
    assert set(ended) == {"a", "b"} and rx.counts["aborted_on_restart"] == 2 and rx.counts["restarts"] == 1
    assert ended["b"].end_s == pytest.approx(100.02)  # the old process's last iteration
    assert ended["b"].prompt_tokens == 7 and ended["b"].output_tokens == 2
    assert ended["a"].attributes["finish_reason"] == "abort"
    later = TapOutput()
    rx.feed(msg(1, [0.0, 0, 0, 0, 0], pid=8, wall=1006.02), later)
    assert later.events == [] and later.infos == []  # nothing of the old process lives on


def test_a_restart_before_any_iteration_ends_them_when_the_new_process_is_heard() -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(msg(0, start=[["a", 5, 5, 0.01]]), out)
    fresh = TapOutput()
    rx.feed(msg(0, pid=9, wall=1006.0), fresh)
    (info,) = fresh.infos
    assert (
        info.request_id == "a" and info.end_s == pytest.approx(106.0) and info.output_tokens == 1
    )  # the prefill's token


def test_a_datagram_with_another_pid_ends_nothing_of_a_process_that_is_sending() -> None:
    """A second engine on the port (data parallel), or one datagram forged with any pid."""
    rx, out = receiver(), TapOutput()
    rx.feed(msg(0, [0.0, 1, 5, 0, 0], start=[["chatcmpl-a", 5, 5, 0.01]]), out)
    rx.feed(msg(0, [0.0, 0, 0, 0, 0], pid=666, wall=1000.01, start=[["forged", 9, 9, 0.01]]), out)
    fin = ["chatcmpl-a", 5, 2, 0.0, 0.01, 0.01, 0.03, "stop"]
    rx.feed(msg(1, [0.0, 1, 0, 0, 0], wall=1000.02, fin=[fin]), out)
    (info,) = out.infos
    assert (info.request_id, info.attributes["finish_reason"], info.output_tokens) == ("a", "stop", 2)
    assert rx.counts["restarts"] == 0 and rx.counts["aborted_on_restart"] == 0 and len(rx.senders) == 2
    decodes = [e for e in out.events if isinstance(e, StepBatch)]
    assert [list(b.request_ids) for b in decodes] == [["a"]]  # pid 7's decode step: "forged" not in it


def test_a_process_quiet_while_another_speaks_ends_at_the_tick_one_alone_is_kept() -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(msg(0, [0.0, 1, 5, 0, 0], start=[["a", 5, 5, 0.01]]), out)
    assert rx.handle([], 100.0 + 10 * QUIET_S) == ([], [])  # alone: down is not yet restarted
    rx.feed(msg(0, [0.0, 0, 0, 0, 0], pid=8, wall=1001.0), out)
    assert out.infos == [] and rx.handle([], 100.0 + QUIET_S - 0.1) == ([], [])
    _, infos = rx.handle([], 100.0 + QUIET_S)  # pid 7 sent nothing for QUIET_S while pid 8 spoke after it
    assert [(i.request_id, i.attributes["aborted_on"]) for i in infos] == [("a", "vllm_restart")]
    assert infos[0].end_s == pytest.approx(100.0)  # its last iteration
    assert rx.counts["senders_gone"] == 1 and rx.counts["aborted_on_restart"] == 1


def test_a_lost_datagram_marks_the_requests_then_decoding_as_work_lost() -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(msg(0, [0.0, 1, 5, 0, 0], start=[["a", 5, 5, 0.01]]), out)
    rx.feed(msg(2, [0.0, 1, 5, 0, 0], wall=1000.02, start=[["b", 5, 5, 0.01]]), out)  # seq 1 lost
    fins = [[rid, 5, 2, 0.0, 0.01, 0.01, 0.03, "stop"] for rid in ("a", "b")]
    rx.feed(msg(3, [0.0, 2, 0, 0, 0], wall=1000.03, fin=fins), out)
    assert rx.counts["lost"] == 1
    assert {i.request_id: i.attributes.get(WORK_LOST) for i in out.infos} == {"a": "true", "b": None}


def test_starts_without_a_fin_are_capped_over_all_processes_the_biggest_holder_pays() -> None:
    """A pid that floods starts fills the cap: the engine's next start evicts the flooder's oldest."""
    rx, out = receiver(max_decoding=4), TapOutput()
    rx.feed(msg(0, [0.0, 1, 5, 0, 0], start=[["good", 5, 5, 0.01]]), out)
    junk = [[f"junk{i}", 5, 5, 0.01] for i in range(3)]
    rx.feed(msg(0, [0.0, 0, 0, 0, 0], pid=666, wall=1000.01, start=junk), out)
    rx.feed(msg(1, [0.0, 1, 5, 0, 0], wall=1000.02, start=[["next", 5, 5, 0.01]]), out)
    engine, flooder = rx.senders
    assert rx.counts["evicted"] == 1 and len(flooder.decoding) == 2
    assert "good" in engine.decoding and "next" in engine.decoding


def test_starts_without_a_fin_are_capped_oldest_first_and_counted() -> None:
    rx, out = receiver(), TapOutput()
    rx.max_decoding = 2
    rx.feed(msg(0, start=[["a", 5, 5, 0.01], ["b", 5, 5, 0.01], ["c", 5, 5, 0.01]]), out)
    later = TapOutput()
    rx.feed(msg(1, [0.0, 2, 0, 0, 0], wall=1000.02), later)
    assert [e.request_id for e in work_events(later.events)] == ["b", "c"] and rx.counts["evicted"] == 1


def test_recent_ids_are_remembered_up_to_a_cap_claims_and_finishes_alike() -> None:
    rx, out = receiver(), TapOutput()
    rx.seen.most = 2
    for seq, rid in enumerate(("a", "b", "c")):
        fin = [[rid, 5, 2, 0.0, 0.01, 0.02, 0.05, "stop"]]
        rx.feed(msg(2 * seq, start=[[rid, 5, 5, 0.01]], wall=1000.0 + seq), out)
        rx.feed(msg(2 * seq + 1, fin=fin, wall=1000.0 + seq + 0.5), out)
    assert [rx.claims(r) for r in ("a", "b", "c")] == [False, True, True]  # the oldest forgotten
    replay = TapOutput()
    rx.feed(msg(6, fin=[["c", 5, 2, 0.0, 0.01, 0.02, 0.05, "stop"]], wall=1003.0), replay)
    assert replay.infos == [] and rx.counts["rejected_duplicate"] == 1  # a remembered finish is refused
