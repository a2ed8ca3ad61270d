"""A vLLM restart seen by the plugin receiver ends the old process's requests in flight at once."""

from __future__ import annotations

import pytest

from sidecar.taps.spans import TapOutput
from tests.sidecar.taps.test_vllm_plugin import msg, receiver
from tests.support import work_events


def test_a_new_pid_ends_the_requests_in_flight_as_aborted_and_counts_them() -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(msg(0, [0.0, 2, 10, 0, 0], start=[["chatcmpl-a", 5, 5, 0.01], ["b", 7, 7, 0.01]]), out)
    rx.feed(msg(1, [0.0, 2, 0, 0, 0], wall=1000.02), out)  # one decode step each: 2 tokens so far
    assert out.infos == []
    fresh = TapOutput()
    rx.feed(msg(0, [0.0, 0, 0, 0, 0], pid=8, wall=1005.0), fresh)  # vLLM restarted
    ended = {i.request_id: i for i in fresh.infos}
    assert set(ended) == {"a", "b"} and rx.counts["aborted_on_restart"] == 2 and rx.counts["restarts"] == 1
    assert ended["b"].end_s == pytest.approx(100.02)  # the old process's last iteration
    assert ended["b"].prompt_tokens == 7 and ended["b"].output_tokens == 2
    assert ended["a"].attributes["finish_reason"] == "abort"
    later = TapOutput()
    rx.feed(msg(1, [0.0, 0, 0, 0, 0], pid=8, wall=1005.02), later)
    assert later.events == [] and later.infos == []  # nothing of the old process lives on


def test_a_restart_before_any_iteration_ends_them_when_the_new_process_is_heard() -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(msg(0, start=[["a", 5, 5, 0.01]]), out)
    fresh = TapOutput()
    rx.feed(msg(0, pid=9, wall=1003.0), fresh)
    (info,) = fresh.infos
    assert (
        info.request_id == "a" and info.end_s == pytest.approx(103.0) and info.output_tokens == 1
    )  # the prefill's token


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
