"""Attributor.add_requests: a batch of infos leaves the attributor as add_request of each in turn would."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import WORK_LOST, RequestInfo
from sidecar.attribution.requests import RequestTable
from sidecar.attribution.rules import make_rule
from sidecar.attribution.task_labels import TaskLabel
from sidecar.timeline import Timeline
from tests.sidecar.attribution.helpers import GPU

IDS = [f"r{k}" for k in range(8)]  # few ids: repeats, live and final ones meet in one batch

_end = st.one_of(st.none(), st.floats(-5.0, 50.0), st.just(1e6), st.just(math.nan))
_info = st.builds(
    RequestInfo,
    st.sampled_from(IDS),
    model=st.sampled_from(["m", "unknown"]),
    task=st.sampled_from(["chat", "unknown"]),
    end_s=_end,
    output_tokens=st.integers(0, 9),
    attributes=st.sampled_from([{}, {"trace_id": "t"}, {WORK_LOST: "true"}]),
)
_item = st.one_of(_info, st.builds(TaskLabel, st.sampled_from(IDS), st.sampled_from(["rag", "unknown"])))


def _attributor(now_s: float, live: list[RequestInfo], final: list[str], held: list[TaskLabel]) -> Attributor:
    att = Attributor(Timeline([GPU]), make_rule("tokens"), request_timeout_s=30.0, max_future_s=100.0)
    for info in live:
        att.add_request(info)
    att.requests.now_s = now_s
    att._finalized.add_many(final)
    for label in held:
        att.add_request(label)
    return att


def _state(att: Attributor) -> dict[str, Any]:
    table: RequestTable = att.requests
    rows = {rid: (acc.slot, acc.info, acc.lost_rows, acc.seen_s) for rid in IDS if (acc := table.get(rid))}
    due = sorted(table._due.entries())
    return {
        "rows": rows,
        "codes": dict(table._codes),
        "due": due,
        "dropped": +att.dropped,
        "held": dict(att._labels._held),
        "late": dict(att._labels._late),
        "models": table._sums.models[: table._sums.busy_s.size].tolist(),
    }


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([-math.inf, 0.0, 20.0]),
    st.lists(_info, max_size=4),
    st.lists(st.sampled_from(IDS), max_size=3),
    st.lists(st.builds(TaskLabel, st.sampled_from(IDS), st.just("rag")), max_size=3),
    st.lists(_item, max_size=12),
)
def test_a_batch_leaves_the_attributor_as_each_info_in_turn_would(
    now_s: float, live: list[RequestInfo], final: list[str], held: list[TaskLabel], items: list[Any]
) -> None:
    one_by_one = _attributor(now_s, live, final, held)
    for item in items:
        one_by_one.add_request(item)
    batched = _attributor(now_s, live, final, held)
    batched.add_requests(items)
    assert repr(_state(batched)) == repr(_state(one_by_one))  # repr: NaN ends compare equal


def test_new_requests_of_a_batch_get_rows_checks_and_models_at_once() -> None:
    att = Attributor(Timeline([GPU]), make_rule("tokens"), request_timeout_s=30.0)
    att.requests.now_s = 10.0
    infos = [RequestInfo(f"n{k}", model="m" if k % 2 else "unknown", end_s=12.0 + k) for k in range(3000)]
    att.add_requests([*infos, RequestInfo("open")])  # 3,000 rows: the table grows while they come
    assert len(att.requests) == 3001
    assert att.requests.get("n2999") is not None and att.requests.get("n2999").info == infos[-1]  # type: ignore[union-attr]
    assert att.requests.due(39.5) == list(range(28))  # each at its end
    assert att.requests.due(40.0) == [28, 3000]  # and one without an end: the timeout from now
    slots = np.array([acc.slot for rid in ("n0", "n1") if (acc := att.requests.get(rid))])
    assert att.requests.models_at(slots, "d") == ["d", "m"]


_NEW = [RequestInfo("r5", end_s=21.0), RequestInfo("r6"), RequestInfo("r7", end_s=22.0)]


@pytest.mark.parametrize(
    ("odd", "held", "live"),
    [
        (RequestInfo("r4", attributes={WORK_LOST: "true"}), [], []),  # its work lost
        (RequestInfo("r4", end_s=1e6), [], []),  # an end too far ahead
        (RequestInfo("r4", end_s=math.nan), [], []),  # NaN: not too far, as one by one
        (RequestInfo("r4"), [TaskLabel("r4", "rag")], []),  # a label waits for it
        (RequestInfo("r4", end_s=30.0), [], [RequestInfo("r4", model="m")]),  # live already
        (RequestInfo("r5", end_s=23.0), [], []),  # an id twice in the batch
        (TaskLabel("r6", "rag"), [], []),  # a task named by id
    ],
)
def test_a_batch_of_new_requests_with_one_odd_info_is_decided_as_one_by_one(
    odd: Any, held: list[TaskLabel], live: list[RequestInfo]
) -> None:
    """The shortcut for a batch of requests all first seen (``first_seen``) must step aside for a
    batch with any info the one-by-one path treats on its own, wherever it stands in the batch."""
    for at in range(len(_NEW) + 1):
        items = [*_NEW[:at], odd, *_NEW[at:]]
        one_by_one = _attributor(20.0, live, [], held)
        for item in items:
            one_by_one.add_request(item)
        batched = _attributor(20.0, live, [], held)
        batched.add_requests(items)
        assert repr(_state(batched)) == repr(_state(one_by_one))


def test_a_batch_of_new_requests_before_any_seal_takes_any_end() -> None:
    """Before the first seal no end is too far (no bound): the shortcut takes 1e6 as the loop does."""
    items = [*_NEW, RequestInfo("r4", end_s=1e6)]
    one_by_one = _attributor(-math.inf, [], [], [])
    for item in items:
        one_by_one.add_request(item)
    batched = _attributor(-math.inf, [], [], [])
    batched.add_requests(items)
    assert repr(_state(batched)) == repr(_state(one_by_one)) and len(batched.requests) == 4
