"""Client spans' tasks joined to vLLM's request spans by trace: every request span waiting in a trace."""

from __future__ import annotations

import pytest

from sidecar.attribution.task_labels import TaskLabel
from sidecar.taps import vllm_span_tasks
from sidecar.taps.spans import ReceivedSpan, TapOutput
from sidecar.taps.vllm_span_tasks import TASK_ATTRIBUTE, TaskJoins

TRACE = "ab" * 16


def client(task: str, trace: str = TRACE) -> ReceivedSpan:
    return ReceivedSpan(trace, "cd" * 8, "", "agent", 1.0, 2.0, {TASK_ATTRIBUTE: task})


def labels(out: TapOutput) -> dict[str, str]:
    return {i.request_id: i.task for i in out.infos if isinstance(i, TaskLabel)}


def test_every_request_span_waiting_in_a_trace_gets_the_client_spans_task() -> None:
    """An agent's two calls (or a completions request's two prompts) in one trace, handled before the
    client span: one request span was kept a trace, so the first kept task ``unknown``."""
    joins, out = TaskJoins(wait_s=30.0, monotonic=lambda: 0.0), TapOutput()
    assert (
        joins.task_of(TRACE, "call-1", 0.0) == "unknown" and joins.task_of(TRACE, "call-2", 0.0) == "unknown"
    )
    joins.client_span(client("summarize"), out)
    assert labels(out) == {"call-1": "summarize", "call-2": "summarize"} and joins.joined == 2


def test_a_client_span_of_task_unknown_leaves_the_waiting_ones_for_the_real_one() -> None:
    joins, out = TaskJoins(wait_s=30.0, monotonic=lambda: 0.0), TapOutput()
    joins.task_of(TRACE, "call-1", 0.0)
    joins.client_span(client("unknown"), out)
    joins.client_span(client("chat"), out)
    assert labels(out) == {"call-1": "chat"}


def test_waiting_request_spans_are_bounded_the_oldest_first_and_expire_by_when_handled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vllm_span_tasks, "MAX_WAITING", 5)
    now = [0.0]
    joins = TaskJoins(wait_s=30.0, monotonic=lambda: now[0])
    for i in range(4):  # one trace may hold many (an agent's calls): no bound a trace but the whole
        joins.task_of("t1", f"a{i}", 0.0)
    for i in range(3):  # 7 in all: the two handled first forgotten
        joins.task_of("t2", f"b{i}", 10.0)
    assert joins.wait_evicted == 2
    now[0] = 39.0
    joins.expire()
    assert joins.wait_expired == 2  # t1's, handled at 0.0; t2's at 10.0 wait on
    now[0] = 40.5
    joins.expire()
    assert joins.wait_expired == 5
    out = TapOutput()
    joins.client_span(client("chat", trace="t2"), out)
    assert labels(out) == {}


def test_a_trace_that_keeps_getting_request_spans_does_not_keep_its_old_ones_waiting() -> None:
    """Adversarial probe (the table before 2026-12-05 moved a trace on by its newest span): a trace
    given a request span every second keeps only those of the last wait_s waiting."""
    now = [0.0]
    joins = TaskJoins(wait_s=30.0, monotonic=lambda: now[0])
    for i in range(256):
        joins.task_of("busy", f"f{i}", 0.0)
    for s in range(1, 41):
        now[0] = float(s)
        kept = joins.expire()
        joins.task_of(f"good{s}", f"g{s}", kept)
        joins.task_of("busy", f"extra{s}", kept)
    assert joins.wait_expired == 256 + 2 * 9  # handled before 40 - 30 (10.0 waits: not before)
    out = TapOutput()
    joins.client_span(client("chat", trace="busy"), out)
    assert list(labels(out)) == [f"extra{s}" for s in range(10, 41)]
