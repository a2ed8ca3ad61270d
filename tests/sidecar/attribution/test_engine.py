"""The attributor on hand-made timelines: worked numbers, conservation, late and bad work."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import Phase, RequestInfo, WorkEvent
from sidecar.attribution.rules import make_rule
from tests.sidecar.attribution.helpers import timeline_with_edges

# Edges at 0.0, 0.1, 0.2, 0.3 s; ticks of 30 J, 30 J and 5 J.
EDGES = [(0.0, 0.0), (0.1, 30.0), (0.2, 60.0), (0.3, 65.0)]


def _worked_example(rule: str) -> tuple[Attributor, dict[str, float]]:
    """Request a decodes 10 tokens in each of the first two ticks; b prefills 50 tokens in the second."""
    att = Attributor(timeline_with_edges(EDGES), make_rule(rule), model="m", unix_offset=lambda: 0.0)
    att.add_work(WorkEvent("a", 0.0, 0.1, Phase.DECODE, 10))
    att.add_work(WorkEvent("a", 0.1, 0.2, Phase.DECODE, 10))
    att.add_work(WorkEvent("b", 0.1, 0.2, Phase.PREFILL, 50))
    att.add_request(RequestInfo("a", model="m", end_s=0.2, output_tokens=20))
    att.add_request(RequestInfo("b", model="m", end_s=0.2, prompt_tokens=50, output_tokens=1))
    records = {r.request_id: r.energy_j for r in att.advance(math.inf)}
    return att, records


def test_tokens_rule_worked_example_matches_hand_numbers() -> None:
    att, got = _worked_example("tokens")
    assert got == pytest.approx({"a": 30.0 + 30.0 * 10 / 60, "b": 30.0 * 50 / 60})
    assert att.totals.idle_j == pytest.approx(5.0)


def test_output_tokens_rule_gives_prefill_only_request_nothing_in_a_shared_tick() -> None:
    _, got = _worked_example("output-tokens")
    assert got == pytest.approx({"a": 60.0, "b": 0.0})


def test_equal_rule_shares_each_tick_by_request() -> None:
    _, got = _worked_example("equal")
    assert got == pytest.approx({"a": 45.0, "b": 15.0})


@pytest.mark.parametrize("rule", ["fitted", "tokens", "output-tokens", "equal"])
def test_every_rule_conserves_measured_energy(rule: str) -> None:
    att, got = _worked_example(rule)
    assert att.totals.measured_j == pytest.approx(65.0)
    assert sum(got.values()) + att.totals.idle_j == pytest.approx(65.0, abs=1e-9)
    assert att.totals.conservation_error_j < 1e-9
    assert min(got.values()) >= 0.0


def test_idle_tick_energy_stays_idle_and_per_device() -> None:
    att, _ = _worked_example("tokens")
    assert att.totals.idle_dev_j.tolist() == pytest.approx([5.0])
    assert att.totals.phase_energy_j[("m", "idle")] == pytest.approx(5.0)


def test_record_is_not_final_until_timeline_covers_end_plus_one_update() -> None:
    att = Attributor(timeline_with_edges(EDGES), make_rule("tokens"), model="m")
    att.add_work(WorkEvent("a", 0.0, 0.1, Phase.DECODE, 10))
    att.add_request(RequestInfo("a", end_s=0.1, output_tokens=10))
    assert att.advance(0.1) == []  # covers the end, but not one update beyond it
    provisional = att.record("a")
    assert provisional is not None and not provisional.final
    assert provisional.energy_j == pytest.approx(30.0)
    final = att.advance(0.2)
    assert [r.request_id for r in final] == ["a"] and final[0].final
    assert att.record("a") is None  # handed out; the ledger keeps it from here


def test_late_work_for_sealed_time_is_dropped_and_counted_not_reattributed() -> None:
    att = Attributor(timeline_with_edges(EDGES), make_rule("tokens"))
    att.advance(0.2)
    assert att.add_work(WorkEvent("late", 0.05, 0.15, Phase.DECODE, 5))
    att.add_work(WorkEvent("straddle", 0.15, 0.25, Phase.DECODE, 10))
    att.advance(math.inf)
    assert att.dropped["late"] == 1
    assert att.dropped["late_clipped"] == 1
    # the sealed ticks were idle and stay idle; the straddler's second half takes tick 3
    assert att.totals.idle_j == pytest.approx(60.0)
    assert att.totals.conservation_error_j < 1e-9


def test_a_record_whose_work_was_clipped_at_the_sealed_edge_says_its_energy_is_unknown() -> None:
    """Probe 10: a diffusion batch longer than ``settle_s`` is reported at its end; the part of its work
    before the sealed edge was dropped (``late_clipped``) and the record, final with a fraction of the
    batch's energy (69 J of ~543 J measured), said nothing and entered the J/image histogram."""
    att = Attributor(timeline_with_edges([*EDGES, (0.4, 70.0)]), make_rule("tokens"))
    att.advance(0.2)
    att.add_work(WorkEvent("straddle", 0.15, 0.25, Phase.DECODE, 10))
    att.add_request(RequestInfo("straddle", end_s=0.25, output_tokens=10))
    (record,) = att.advance(math.inf)
    assert record.energy_j > 0 and att.dropped["late_clipped"] == 1
    assert record.attributes["energy_unknown"] == "true"
    assert record.attributes["energy_unknown_reason"] == "work_lost"


@pytest.mark.parametrize(
    "event",
    [
        WorkEvent("x", 0.2, 0.1, Phase.DECODE, 1),
        WorkEvent("x", 0.0, 0.1, Phase.DECODE, -1),
        WorkEvent("x", 0.0, float("nan"), Phase.DECODE, 1),
        WorkEvent("", 0.0, 0.1, Phase.DECODE, 1),
        WorkEvent("x", 0.0, 0.1, Phase.IDLE, 1),
    ],
    ids=["inverted", "negative-units", "nan-time", "no-id", "idle-phase"],
)
def test_invalid_work_is_rejected_and_counted_without_raising(event: WorkEvent) -> None:
    att = Attributor(timeline_with_edges(EDGES), make_rule("fitted"))
    assert att.add_work(event) is False
    assert att.dropped["invalid"] == 1


def test_request_without_end_is_finalized_after_timeout_and_marked_inferred() -> None:
    edges = [(0.1 * k, 10.0 * k) for k in range(40)]
    att = Attributor(timeline_with_edges(edges), make_rule("tokens"), request_timeout_s=1.0)
    att.add_work(WorkEvent("orphan", 0.0, 0.5, Phase.DECODE, 5))
    done = att.advance(math.inf)
    assert [r.request_id for r in done] == ["orphan"]
    assert done[0].attributes == {"end_inferred": "true"}
    assert done[0].energy_j == pytest.approx(50.0)


def test_work_after_final_is_rejected() -> None:
    att, _ = _worked_example("tokens")
    assert att.add_work(WorkEvent("a", 0.25, 0.3, Phase.DECODE, 1)) is False
    assert att.dropped["after_final"] == 1


def test_after_final_only_a_task_is_taken_and_handed_over_once() -> None:
    att, energy = _worked_example("tokens")
    att.add_request(
        RequestInfo("a", model="m", task="code", end_s=0.2, output_tokens=20)
    )  # a late client span
    att.add_request(RequestInfo("b", model="m", end_s=0.2, output_tokens=99))  # no task: refused
    assert att.dropped["info_after_final"] == 1  # task_late: counted once a stored record takes it
    assert att.take_late_tasks() == {"a": "code"} and att.take_late_tasks() == {}
    assert att.advance(math.inf) == [] and att.record("a") is None  # no new record, no energy moved
    assert energy["a"] > 0


def test_short_request_is_flagged_approximate() -> None:
    edges = [(0.1 * k, 10.0 * k) for k in range(10)]
    att = Attributor(timeline_with_edges(edges), make_rule("tokens"))
    att.add_work(WorkEvent("long", 0.0, 0.5, Phase.DECODE, 50))
    att.add_work(WorkEvent("short", 0.21, 0.23, Phase.DECODE, 2))
    att.add_request(RequestInfo("long", end_s=0.5, output_tokens=50))
    att.add_request(RequestInfo("short", end_s=0.23, output_tokens=2))
    got = {r.request_id: r for r in att.advance(math.inf)}
    assert got["short"].approximate and not got["long"].approximate


def test_a_step_batch_is_attributed_exactly_like_its_members_as_events() -> None:
    """One array event per engine step (the scheduler hook's path) gives the per-event numbers."""
    from sidecar.attribution.events import StepBatch

    def run(use_batch: bool) -> dict[str, float]:
        att = Attributor(timeline_with_edges(EDGES), make_rule("tokens"), model="m", unix_offset=lambda: 0.0)
        att.add_work(WorkEvent("a", 0.0, 0.1, Phase.DECODE, 10))
        if use_batch:
            step = StepBatch(
                0.1,
                0.2,
                ("a", "b"),
                np.array([Phase.DECODE, Phase.PREFILL]),
                np.array([10.0, 50.0]),
                np.array([0.0, 0.0]),
            )
            assert att.add_work(step)
        else:
            att.add_work(WorkEvent("a", 0.1, 0.2, Phase.DECODE, 10))
            att.add_work(WorkEvent("b", 0.1, 0.2, Phase.PREFILL, 50))
        att.add_request(RequestInfo("a", model="m", end_s=0.2, output_tokens=20))
        att.add_request(RequestInfo("b", model="m", end_s=0.2, prompt_tokens=50, output_tokens=1))
        return {r.request_id: r.energy_j for r in att.advance(math.inf)}

    assert run(True) == pytest.approx(run(False))


def test_a_step_batch_with_a_bad_array_is_rejected_and_counted() -> None:
    from sidecar.attribution.events import StepBatch

    att = Attributor(timeline_with_edges(EDGES), make_rule("tokens"), model="m", unix_offset=lambda: 0.0)
    bad = StepBatch(0.1, 0.2, ("a",), np.array([Phase.DECODE]), np.array([math.nan]), np.array([0.0]))
    assert not att.add_work(bad)
    assert att.dropped["invalid"] == 1


def test_a_step_batch_drops_only_its_final_members_even_when_its_ids_tuple_is_reused() -> None:
    """The receiver hands the same ids tuple for steps with the same members; codes cached for it
    must not outlive a finalization."""
    from sidecar.attribution.events import StepBatch

    att = Attributor(timeline_with_edges(EDGES), make_rule("tokens"), model="m", unix_offset=lambda: 0.0)
    ids = ("a", "b")

    def step(t0: float) -> StepBatch:
        phase = np.array([Phase.DECODE, Phase.DECODE])
        return StepBatch(t0, t0 + 0.05, ids, phase, np.array([1.0, 1.0]), np.array([5.0, 5.0]))

    assert att.add_work(step(0.0)) and att.add_work(step(0.05))
    att.add_request(RequestInfo("a", model="m", end_s=0.1, output_tokens=2))
    finals = att.advance(math.inf)
    assert [r.request_id for r in finals] == ["a"]
    assert att.add_work(step(0.1))  # "a" is final now: only "b" is queued
    assert att.dropped["after_final"] == 1
    att.add_request(RequestInfo("b", model="m", end_s=0.15, output_tokens=3))
    (b,) = att.advance(math.inf)
    assert b.request_id == "b" and b.energy_j > 0


def test_a_step_with_final_members_between_new_ones_queues_only_the_new_ones() -> None:
    from sidecar.attribution.events import StepBatch

    att = Attributor(timeline_with_edges(EDGES), make_rule("tokens"), model="m", unix_offset=lambda: 0.0)
    att.add_work(WorkEvent("a", 0.0, 0.05, Phase.DECODE, 1))
    att.add_request(RequestInfo("a", model="m", end_s=0.05, output_tokens=1))
    assert [r.request_id for r in att.advance(0.2)] == ["a"]
    ids = ("n1", "a", "n2", "a")
    units = np.array([4.0, 1.0, 2.0, 1.0])
    step = StepBatch(0.2, 0.3, ids, np.full(4, int(Phase.PREFILL)), units, units)
    assert att.add_work(step)
    assert att.dropped["after_final"] == 2
    att.advance(0.3)
    got = {rid: rec.energy_j for rid in ("n1", "n2") if (rec := att.record(rid)) is not None}
    assert got == pytest.approx({"n1": 5.0 * 4 / 6, "n2": 5.0 * 2 / 6})  # the last tick, by tokens 4:2


def test_energy_by_model_adds_each_models_requests_in_a_shared_tick() -> None:
    """Requests without a model yet count under the server's; the others under their own."""
    att = Attributor(timeline_with_edges(EDGES), make_rule("tokens"), model="m", unix_offset=lambda: 0.0)
    for rid, units in (("x1", 10), ("open", 20), ("y1", 30), ("x2", 40)):
        att.add_work(WorkEvent(rid, 0.0, 0.1, Phase.DECODE, units))
    for rid, model in (("x1", "x"), ("y1", "y"), ("x2", "x")):
        att.add_request(RequestInfo(rid, model=model, end_s=0.1, output_tokens=1))
    att.advance(0.1)
    energy = att.totals.phase_energy_j
    assert energy[("x", "decode")] == pytest.approx(30.0 * 50 / 100)
    assert energy[("m", "decode")] == pytest.approx(30.0 * 20 / 100)
    assert energy[("y", "decode")] == pytest.approx(30.0 * 30 / 100)
