"""Tasks named by request id alone (a client span's ``jouletrace.request.id``): set, held, late, bounded."""

from __future__ import annotations

import math

import pytest

from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import Phase, RequestInfo, WorkEvent
from sidecar.attribution.rules import make_rule
from sidecar.attribution.task_labels import HeldLabels, TaskLabel
from tests.sidecar.attribution.helpers import timeline_with_edges

EDGES = [(0.0, 0.0), (0.1, 30.0), (0.2, 60.0), (0.3, 65.0)]  # as test_engine's worked example


def _attributor() -> Attributor:
    return Attributor(timeline_with_edges(EDGES), make_rule("tokens"), model="m", unix_offset=lambda: 0.0)


def test_a_label_names_the_task_of_a_live_request_and_keeps_all_else() -> None:
    att = _attributor()
    att.add_work(WorkEvent("a", 0.0, 0.2, Phase.DECODE, 20))
    att.add_request(
        RequestInfo("a", model="m", operation="text_completion", end_s=0.2, prompt_tokens=7, output_tokens=20)
    )
    att.add_request(TaskLabel("a", "code"))  # the vLLM span that would join it by trace never came
    (rec,) = att.advance(math.inf)
    assert (rec.task, rec.operation) == ("code", "text_completion")
    assert (rec.prompt_tokens, rec.output_tokens) == (7, 20)
    assert rec.energy_j == pytest.approx(60.0)


def test_a_label_never_replaces_a_known_task() -> None:
    att = _attributor()
    att.add_work(WorkEvent("a", 0.0, 0.2, Phase.DECODE, 20))
    att.add_request(RequestInfo("a", model="m", task="chat", end_s=0.2, output_tokens=20))
    att.add_request(TaskLabel("a", "code"))
    assert [r.task for r in att.advance(math.inf)] == ["chat"]


def test_a_label_for_a_request_seen_by_its_work_only_survives_the_finishing_info() -> None:
    att = _attributor()
    att.add_work(WorkEvent("a", 0.0, 0.2, Phase.DECODE, 20))
    att.add_request(TaskLabel("a", "code"))
    att.add_request(RequestInfo("a", model="m", end_s=0.2, prompt_tokens=5, output_tokens=20))
    (rec,) = att.advance(math.inf)
    assert (rec.task, rec.model, rec.prompt_tokens, rec.output_tokens) == ("code", "m", 5, 20)


def test_a_label_before_its_request_waits_for_the_first_info_and_makes_no_record() -> None:
    att = _attributor()
    att.add_request(TaskLabel("a", "code"))
    att.add_request(TaskLabel("elsewhere", "chat"))  # another server's request: never seen here
    assert len(att.requests) == 0
    att.add_request(RequestInfo("a", model="m", end_s=0.2, output_tokens=20))
    att.add_work(WorkEvent("a", 0.0, 0.2, Phase.DECODE, 20))
    assert [(r.request_id, r.task) for r in att.advance(math.inf)] == [("a", "code")]
    assert att.record("elsewhere") is None and len(att.requests) == 0


def test_a_label_after_final_is_a_late_task_like_a_late_trace_join() -> None:
    att = _attributor()
    att.add_work(WorkEvent("a", 0.0, 0.2, Phase.DECODE, 20))
    att.add_request(RequestInfo("a", model="m", end_s=0.2, output_tokens=20))
    assert [r.task for r in att.advance(math.inf)] == ["unknown"]
    att.add_request(TaskLabel("a", "code"))
    assert att.take_late_tasks() == {"a": "code"}  # counted once a stored record takes it (the app)
    assert att.advance(math.inf) == []


def test_held_labels_are_bounded_the_oldest_forgotten_and_counted() -> None:
    att = Attributor(timeline_with_edges(EDGES), make_rule("tokens"), unix_offset=lambda: 0.0)
    att._labels = HeldLabels(most=2)  # task_labels.MAX_HELD in production
    for k in range(3):
        att.add_request(TaskLabel(f"r{k}", "code"))
    assert att.dropped["task_label_unmatched"] == 1 and len(att._labels) == 2
    for k in range(3):
        att.add_request(RequestInfo(f"r{k}", end_s=0.2, output_tokens=1))
        att.add_work(WorkEvent(f"r{k}", 0.0, 0.2, Phase.DECODE, 1))
    tasks = {r.request_id: r.task for r in att.advance(math.inf)}
    assert tasks == {"r0": "unknown", "r1": "code", "r2": "code"}
    assert len(att._labels) == 0
