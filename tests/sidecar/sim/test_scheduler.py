"""Continuous batching: limits respected, chunked prefill, every token produced once."""

from __future__ import annotations

import itertools
from collections import defaultdict

from sidecar.attribution.events import Phase
from sidecar.sim.run import SimRun
from sidecar.sim.scheduler import Member, SchedulerConfig, ScheduleResult, schedule
from sidecar.sim.workload import SimRequest


def _run(requests: list[SimRequest], **kw: int) -> ScheduleResult:
    """Fixed 10 ms steps, 1 ms gaps."""

    def execute(members: tuple[Member, ...]) -> float:
        return 0.010

    return schedule(requests, SchedulerConfig(**kw), execute, lambda: 0.001)


def test_every_request_gets_its_prompt_and_output_tokens_exactly(small_run: SimRun) -> None:
    done: dict[tuple[str, Phase], int] = defaultdict(int)
    for step in small_run.steps:
        for m in step.members:
            done[(m.request_id, m.phase)] += m.tokens
    for r in small_run.workload:
        assert done[(r.request_id, Phase.PREFILL)] == r.prompt_tokens
        # the last prefill chunk yields the first output token
        assert done[(r.request_id, Phase.DECODE)] == r.output_tokens - 1


def test_batch_limits_hold_and_bind_when_saturated(saturated_run: SimRun) -> None:
    cfg = saturated_run.config.scheduler
    sizes = [len(s.members) for s in saturated_run.steps]
    tokens = [sum(m.tokens for m in s.members) for s in saturated_run.steps]
    assert max(sizes) == cfg.max_num_seqs
    assert max(tokens) == cfg.max_num_batched_tokens
    for s in saturated_run.steps:
        assert len({m.request_id for m in s.members}) == len(s.members)


def test_long_prompt_is_chunked_to_the_token_budget() -> None:
    result = _run([SimRequest("long", 0.0, 2000, 3, "prefill-heavy")], max_num_batched_tokens=512)
    chunks = [
        (m.tokens, m.context_tokens) for s in result.steps for m in s.members if m.phase is Phase.PREFILL
    ]
    assert chunks == [(512, 512), (512, 1024), (512, 1536), (464, 2000)]
    decodes = [m.context_tokens for s in result.steps for m in s.members if m.phase is Phase.DECODE]
    assert decodes == [2001, 2002]  # KV length attended: prompt + outputs so far


def test_decodes_go_first_and_prefill_fills_the_rest_of_the_budget() -> None:
    reqs = [SimRequest("a", 0.0, 10, 5, "mixed"), SimRequest("b", 0.015, 600, 2, "mixed")]
    steps = _run(reqs, max_num_batched_tokens=100).steps
    # step 0: a's prefill; step 1 (t=11 ms): a decodes; b arrives at 15 ms, admitted at step 2
    second = steps[2].members
    assert second[0] == Member("a", Phase.DECODE, 1, 12)
    assert second[1] == Member("b", Phase.PREFILL, 99, 99)


def test_max_num_seqs_queues_the_rest_fcfs() -> None:
    reqs = [SimRequest(f"r{i}", 0.0, 4, 3, "mixed") for i in range(5)]
    result = _run(reqs, max_num_seqs=2)
    assert all(len(s.members) <= 2 for s in result.steps)
    order = sorted(result.finish_s, key=lambda rid: result.finish_s[rid])
    assert order == ["r0", "r1", "r2", "r3", "r4"]


def test_single_output_token_finishes_with_its_prefill() -> None:
    result = _run([SimRequest("one", 0.0, 700, 1, "prefill-heavy")], max_num_batched_tokens=512)
    assert len(result.steps) == 2
    assert result.finish_s["one"] == result.first_token_s["one"] == result.steps[-1].t1_s


def test_engine_idles_until_the_next_arrival() -> None:
    reqs = [SimRequest("early", 0.0, 8, 2, "mixed"), SimRequest("late", 5.0, 8, 2, "mixed")]
    steps = _run(reqs).steps
    assert [s.t0_s for s in steps][2] == 5.0
    for a, b in itertools.pairwise(steps):
        assert b.t0_s >= a.t1_s + 0.001 - 1e-12
