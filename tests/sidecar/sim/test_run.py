"""A whole run: ground truth conserves energy, events tell the same work in both modes, seeds repeat."""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.attribution.events import Phase
from sidecar.errors import ConfigError
from sidecar.sim.gpu import GpuConfig
from sidecar.sim.run import SimConfig, SimRun, simulate
from sidecar.sim.workload import WorkloadConfig

from .conftest import SMALL


def _conserves(run: SimRun) -> None:
    attributed = math.fsum(run.truth_j.values())
    assert attributed + run.idle_truth_j == pytest.approx(run.total_j, rel=1e-9)
    assert run.total_j == pytest.approx(float(run.step_energy_j.sum()) + run.trace.idle_j, rel=1e-12)
    assert all(e > 0 for e in run.truth_j.values())
    for rid, phases in run.truth_phase_j.items():
        assert phases[Phase.PREFILL] + phases[Phase.DECODE] == pytest.approx(run.truth_j[rid], rel=1e-12)


def test_truth_plus_idle_is_the_total_energy(small_run: SimRun) -> None:
    _conserves(small_run)
    assert small_run.idle_truth_j > 0.05 * small_run.total_j  # bursts leave real idle time


@pytest.mark.parametrize("split", ["equal", "shapley"])
@pytest.mark.parametrize("gap_truth", ["idle", "shared"])
def test_conservation_holds_for_every_truth_convention(split: str, gap_truth: str) -> None:
    cfg = dataclasses.replace(SMALL, gpu=GpuConfig(static_split=split), gap_truth=gap_truth)  # type: ignore[arg-type]
    run = simulate(cfg, seed=11)
    _conserves(run)
    if gap_truth == "shared":
        assert run.idle_truth_j == pytest.approx(run.trace.idle_j - run.cpu_gap_j)


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), arrivals=st.sampled_from(["all-at-once", "poisson"])
)
def test_conservation_for_any_seed(seed: int, n: int, arrivals: str) -> None:
    cfg = SimConfig(workload=WorkloadConfig(n_requests=n, arrivals=arrivals))  # type: ignore[arg-type]
    _conserves(simulate(cfg, seed))


def test_requests_finish_with_their_tokens_and_records(small_run: SimRun) -> None:
    by_id = {r.request_id: r for r in small_run.workload}
    last_t1: dict[str, float] = {}
    for s in small_run.steps:
        for m in s.members:
            last_t1[m.request_id] = s.t1_s
    assert len(small_run.requests) == len(small_run.workload)
    for info in small_run.requests:
        r = by_id[info.request_id]
        assert (info.model, info.operation, info.task, info.unit) == ("sim-llm", "chat", r.kind, "token")
        assert (info.prompt_tokens, info.output_tokens, info.output_units) == (
            r.prompt_tokens,
            r.output_tokens,
            float(r.output_tokens),
        )
        assert info.start_s == r.arrival_s
        assert info.end_s == last_t1[r.request_id]
        assert info.end_s is not None and info.end_s <= small_run.duration_s


def test_iteration_events_are_one_per_member_per_step(small_run: SimRun) -> None:
    assert len(small_run.events) == sum(len(s.members) for s in small_run.steps)
    for e in small_run.events:
        e.check()
        assert e.steps == 1.0
    t1 = [e.t1_s for e in small_run.events]
    assert t1 == sorted(t1)


def test_phase_events_tell_the_same_work_as_iteration_events(small_run: SimRun) -> None:
    phase_run = simulate(dataclasses.replace(SMALL, event_mode="phase"), seed=7)
    assert phase_run.truth_j == small_run.truth_j  # the event mode changes nothing else

    def totals(run: SimRun) -> dict[tuple[str, Phase], tuple[float, float, float]]:
        acc: dict[tuple[str, Phase], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        for e in run.events:
            a = acc[(e.request_id, e.phase)]
            a[0] += e.units
            a[1] += e.steps
            a[2] += e.context_tokens
        return {k: (a[0], a[1], a[2]) for k, a in acc.items()}

    assert totals(phase_run) == totals(small_run)
    by_id = {r.request_id: r for r in phase_run.workload}
    for e in phase_run.events:
        e.check()
        r = by_id[e.request_id]
        if e.phase is Phase.PREFILL:
            assert e.units == r.prompt_tokens
        else:
            assert e.units == r.output_tokens - 1
            assert e.t0_s == phase_run.first_token_s[e.request_id]


def test_same_seed_same_run_and_other_seed_differs() -> None:
    a, b, c = simulate(SMALL, 5), simulate(SMALL, 5), simulate(SMALL, 6)
    assert a.events == b.events and a.truth_j == b.truth_j and a.total_j == b.total_j
    assert a.counter.values_at([1.0, 2.0, 3.0]).tolist() == b.counter.values_at([1.0, 2.0, 3.0]).tolist()
    assert a.truth_j != c.truth_j


def test_counter_settings_do_not_change_the_work() -> None:
    a = simulate(SMALL, 5)
    b = simulate(dataclasses.replace(SMALL, counter=dataclasses.replace(SMALL.counter, period_s=0.05)), 5)
    assert a.events == b.events and a.truth_j == b.truth_j


def test_default_run_is_fast_enough_for_the_benchmark() -> None:
    start = time.perf_counter()
    run = simulate(SimConfig(), seed=1)
    elapsed = time.perf_counter() - start
    assert len(run.requests) == 300 and len(run.events) > 50_000
    assert elapsed < 5.0


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"sim\.event_mode"):
        simulate(dataclasses.replace(SMALL, event_mode="spans"), 0)  # type: ignore[arg-type]
