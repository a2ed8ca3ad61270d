"""``benchmarks/sidecar_cpu.py``: its engine keeps the batch full and each step's prefill within the
chunk, and a 2 s run at batch 16 reaches a real sidecar whole: the sidecar counts every step sent and
loses none, every request that finished gets its final record, and the last line is the traffic
window's CPU per 1000 of the output tokens it printed."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.benchmarks.bench_module import load_bench, run_bench


def test_the_engine_keeps_the_batch_full_and_prefills_at_most_a_chunk_a_step() -> None:
    bench = load_bench("sidecar_cpu")
    engine = bench.Engine(batch=8, chunk=512, wall0_s=1e9, seed=3)
    finished: list[Any] = []
    members = 0
    for step in range(600):
        ids, tokens, computed = engine.schedule(step * 0.0125)
        assert len(engine.running) == 8 and 0 < len(ids) <= 8 and len(set(ids)) == len(ids)
        prompts = {r.engine_id: r.num_prompt_tokens for r in engine.running}
        prefilling = [c < prompts[i] for i, c in zip(ids, computed, strict=True)]
        assert sum(k for k, p in zip(tokens, prefilling, strict=True) if p) <= 512  # the chunk budget
        assert all(k == 1 for k, p in zip(tokens, prefilling, strict=True) if not p)  # a decode: a token
        members += len(ids)
        finished += engine.advance()
    assert finished and all(r.generated == r.output_len for r in finished)
    assert engine.output_tokens == sum(r.generated for r in [*finished, *engine.running]) <= members


@pytest.mark.integration
def test_a_short_run_reaches_the_sidecar_whole_and_ends_with_the_cpu_per_1000_tokens() -> None:
    env = {"JOULETRACE_FIT_WARMUP_TICKS": "10"}  # a 2 s stream is 20 ticks: the fit's 50 would wait 30 s
    out = run_bench("sidecar_cpu", ["--seconds", "2", "--batch", "16"], env=env)
    stream = re.search(r"^stream: batch 16, (\d+) steps of 12.5 ms .*, (\d+) output tokens$", out, re.M)
    counted = re.search(r"^sidecar counted: (.*)$", out, re.M)
    traffic = re.search(r"^with traffic: +(\S+) CPU s in (\S+) s ", out, re.M)
    last = re.fullmatch(r"cpu s per 1000 tokens (\S+)", out.splitlines()[-1])
    assert stream and counted and traffic and last, out
    steps, tokens = int(stream.group(1)), int(stream.group(2))
    counts = {k: float(v) for k, v in re.findall(r"(\w+) (\d+)", counted.group(1))}
    assert steps in (160, 161)  # 2 s of 12.5 ms steps (the simulated clock sums floats)
    assert counts["steps"] == steps and counts["lost"] == 0  # every step sent over UDP arrived
    assert tokens <= counts["members"]  # a member makes at most one token (a prefill chunk none)
    assert counts["finished"] >= 1 and counts["records_final"] == counts["finished"]
    busy_s, figure = float(traffic.group(1)), float(last.group(1))
    assert busy_s > 0 and float(traffic.group(2)) >= 2.0
    assert figure == pytest.approx(1e3 * busy_s / tokens, abs=1e3 * 0.005 / tokens + 1e-4)  # busy_s: 2 places
