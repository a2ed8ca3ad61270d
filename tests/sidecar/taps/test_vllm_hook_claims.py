"""The scheduler hook's claims over the plugin's and the spans' work: a request's work is added once.

The hook claims every request it has a ``new`` row for; one in flight before it began to hear the
engine is adopted (``adopted_before``); a ``new`` row lost on the way comes again (``renew``).
"""

from __future__ import annotations

import numpy as np

from sidecar.attribution.events import WORK_LOST, Phase, StepBatch
from sidecar.contracts.scheduler_wire import FinRow, NewRow, StepRow
from sidecar.taps.spans import ReceivedSpan, TapOutput
from sidecar.taps.vllm_plugin import PluginReceiver
from sidecar.taps.vllm_spans import VllmSpanHandler
from tests.sidecar.taps.test_vllm_hook import WALL, dgram, members, rx, steps
from tests.sidecar.taps.test_vllm_plugin import msg as plugin_msg
from tests.sidecar.taps.test_vllm_spans import llm_span
from tests.support import work_events


def test_the_plugin_adds_no_work_for_requests_the_hook_claims() -> None:
    hook, out = rx(), TapOutput()
    plugin = PluginReceiver(lambda unix_s: unix_s - 900.0, claimed_by=hook.claims, wall=lambda: 1000.0)
    hook.feed(
        dgram(0, new=[NewRow(0, "chatcmpl-a", 10, 1.0)], steps=[StepRow(0.5, 0.4, [0], [10], [0])]), out
    )
    plugin.feed(
        plugin_msg(0, [0.0, 2, 30, 0, 0], start=[["chatcmpl-a", 10, 10, 0.02], ["chatcmpl-b", 20, 20, 0.02]]),
        out,
    )
    plugin.feed(plugin_msg(1, [0.0, 2, 0, 0, 0], wall=1000.02), out)
    fin = [
        ["chatcmpl-a", 10, 2, 0.0, 0.02, 0.1, 0.5, "length"],
        ["chatcmpl-c", 5, 2, 0.0, 0.02, 0.1, 0.5, "length"],
    ]
    plugin.feed(plugin_msg(2, [0.0, 1, 0, 0, 0], wall=1000.04, fin=fin), out)
    work = [e for e in out.events if not isinstance(e, StepBatch)]
    assert "a" not in {e.request_id for e in work}  # a's work is the hook's step only
    assert {e.request_id for e in work} == {"b", "c"}  # the plugin still covers what the hook did not see
    assert {i.request_id for i in out.infos} == {"a", "c"}  # infos still come from the plugin
    assert plugin.counts["claimed_by_hook"] == 1 and plugin.counts["double_counted"] == 0
    total_a = sum(
        float(np.sum(b.units[[i for i, x in enumerate(b.request_ids) if x == "a"]])) for b in steps(out)
    )
    assert total_a == 10


def test_the_plugin_adds_no_work_for_a_request_in_flight_before_the_hook_began() -> None:
    """A sidecar started while vLLM ran: the plugin hears such a request first at its fin; the hook
    took its steps as ``unknown-7-9``, so the plugin's whole-phase work would count them twice. One
    that arrived after the hook began and that the hook did not claim still gets it."""
    hook, out = rx(), TapOutput()
    hook.feed(dgram(0, steps=[StepRow(0.3, 0.2, [9], [1], [40])]), out)  # began at 100.0 (sidecar clock)
    plugin = PluginReceiver(
        lambda unix_s: unix_s - 900.0,
        claimed_by=hook.claims,
        adopted_before=hook.adopted_before,
        wall=lambda: 1001.0,
    )
    fin = [  # read at 101.0: "old" arrived at 91.0, "late" at 100.5
        ["chatcmpl-old", 30, 41, 0.0, 0.1, 1.5, 10.0, "length"],
        ["chatcmpl-late", 30, 41, 0.0, 0.1, 0.3, 0.5, "length"],
    ]
    plugin.feed(plugin_msg(0, [0.0, 1, 0, 0, 0], wall=1001.0, fin=fin), out)
    work = work_events([e for e in out.events if not isinstance(e, StepBatch)])
    assert {e.request_id for e in work} == {"late"} and {i.request_id for i in out.infos} == {"old", "late"}
    assert (plugin.counts["work_adopted_by_hook"], plugin.counts["whole_phase"]) == (1, 1)


def test_a_span_of_a_request_in_flight_before_the_hook_began_adds_no_work_again() -> None:
    """A sidecar started while vLLM ran: the hook took the steps of a request it had no new row for
    as ``unknown-7-9``; that request's span (it arrived before the hook's first datagram was sent)
    adds its info only. A span of a request that arrived later and that the hook did not claim (its
    new row lost) still supplies its work."""
    r, out = rx(), TapOutput()
    assert r.adopted_before() == -np.inf  # nothing heard yet: no span is held back
    r.feed(dgram(0, steps=[StepRow(0.3, 0.2, [9], [1], [40])], fin=[FinRow(9, 41, "length")]), out)
    assert r.adopted_before() == WALL - 900.0 and r.counts["unknown_member"] == 1
    spans = VllmSpanHandler(lambda unix_s: unix_s - 900.0, claims=r.claims, adopted_before=r.adopted_before)
    for rid, start_unix_s in (("chatcmpl-old", WALL - 10.0), ("chatcmpl-late", WALL + 0.5)):
        attrs = {"gen_ai.request.id": rid, "gen_ai.usage.prompt_tokens": 30,
                 "gen_ai.usage.completion_tokens": 41, "gen_ai.latency.e2e": 2.0,
                 "gen_ai.latency.time_in_model_prefill": 0.1,
                 "gen_ai.latency.time_in_model_decode": 1.5}  # fmt: skip
        span = ReceivedSpan(rid, "s1", "", "llm_request", start_unix_s, start_unix_s + 2.0, attrs)  # type: ignore[arg-type]
        assert spans.handle(span, out)
    spans.flush(out)
    worked = {e.request_id for e in work_events([e for e in out.events if not isinstance(e, StepBatch)])}
    assert worked == {"late"} and {"old", "late"} <= {i.request_id for i in out.infos}
    counts = {outcome: n for (_, outcome), n in spans.stats().events.items()}
    assert (counts["work_adopted_by_hook"], counts["work_from_spans"]) == (1, 1)


def test_a_lost_new_row_taken_from_a_later_renew_keeps_the_requests_id_and_its_span_adds_no_work() -> None:
    """The datagram with b's new row is lost; the next carries the row again (``renew``) before b's
    step: b's steps go under its own id (not ``unknown-7-1``), the hook claims it, so its span adds no
    work again; its record says work may be lost (the lost datagram could have held steps of it). A
    renewed row the receiver has already changes nothing. Before the renew, the same loss made b
    ``unknown-7-1`` and its span added b's whole-phase work beside it: counted twice."""
    r, out = rx(), TapOutput()
    a_row, b_row = NewRow(0, "chatcmpl-a", 5, 1.0), NewRow(1, "chatcmpl-b", 5, 0.7)
    r.feed(dgram(0, new=[a_row], steps=[StepRow(0.9, 0.8, [0], [5], [0])]), out)
    # datagram 1 (b's new row) lost
    r.feed(dgram(2, renew=[a_row, b_row], steps=[StepRow(0.6, 0.5, [0, 1], [1, 5], [5, 0])]), out)
    r.feed(dgram(3, renew=[b_row], steps=[StepRow(0.5, 0.4, [0, 1], [1, 1], [6, 5])]), out)
    r.feed(dgram(4, fin=[FinRow(0, 3, "stop"), FinRow(1, 3, "stop")]), out)
    assert members(steps(out)[-1]) == [("a", Phase.DECODE, 1, 7), ("b", Phase.DECODE, 1, 6)]
    assert (r.counts["new_renewed"], r.counts["unknown_member"], r.counts["lost"]) == (1, 0, 1)
    assert r.counts["rejected_duplicate"] == 0 and r.claims("b")
    infos = {i.request_id: i for i in out.infos}
    assert infos["b"].attributes[WORK_LOST] == "true" and infos["b"].output_tokens == 3
    spans = VllmSpanHandler(lambda unix_s: unix_s - 900.0, claims=r.claims, adopted_before=r.adopted_before)
    assert spans.handle(llm_span("chatcmpl-b"), out)  # began at 1000.0: after the hook did
    spans.flush(out)
    assert not work_events([e for e in out.events if not isinstance(e, StepBatch)])
    counts = {outcome: n for (_, outcome), n in spans.stats().events.items()}
    assert counts["work_from_spans"] == 0
