"""The sidecar's CPU per 1000 output tokens at batch 256: a replayed scheduler-hook stream over UDP.

One real sidecar process (``jouletrace sidecar``: the product's wiring, tick and
HTTP server, the real :class:`~sidecar.taps.vllm_hook.HookReceiver`, attribution
with the fitted rule and a SQLite ledger) on the **replay meter**: there is no
GPU here, so the energy counter is a synthetic trace (100 ms updates, 150-650 W)
played back by the meter users select with ``--meter replay``. This script plays
an engine at batch 256: ``--step-ms`` steps (12.5 ms: ~80 steps/s, ~20,000 output
tokens/s, an H100-like rate), requests finishing and new ones admitted every
step, their prompts prefilled in chunks of at most ``--chunk`` tokens per step
(so steps mix prefill chunks and decodes). Each step goes through the scheduler
hook's own stream (``servers/vllm/hook_stream.py``: the same ids, flushes and
encoding as inside vLLM) and out over real UDP to the sidecar's hook port, paced
in real time.

Measured: the sidecar process's CPU seconds (user + system, psutil) over two
windows of the same length in the same run: idle (the baseline: started, no
traffic) and traffic (the stream, then ``settle_s`` + 1 s for the last records
to become final; on a loaded box longer, until every finished request's record
is final, with the idle rate scaled to that length). Printed: both, the CPU per step, and the sidecar's own
counters (steps and members received, datagrams lost, records final) from its
``/metrics``. Ends with ``cpu s per 1000 tokens N`` (traffic CPU / output tokens
x 1000, idle included).

    .venv/bin/python benchmarks/sidecar_cpu.py [--seconds 40] [--step-ms 12.5] [--batch 256]
"""

from __future__ import annotations

import argparse
import math
import random
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratch import scratch_dir

from servers.vllm.hook_stream import StepStream
from servers.vllm.launcher import Process, free_port, sidecar_command, wait_http

SETTLE_S = 2.0  # the sidecar's default settle_s: the traffic window waits this (+1 s) for the last finals
COUNTER_PERIOD_S = 0.1  # an NVIDIA counter's update period


@dataclass
class _Req:
    engine_id: str
    num_prompt_tokens: int
    arrival_time: float  # Unix s (vLLM's Request.arrival_time)
    output_len: int
    computed: int = 0  # tokens in the KV cache
    generated: int = 0


class Engine:
    """A continuous batch: ``batch`` slots, chunked prefill, a request admitted when one finishes."""

    def __init__(self, batch: int, chunk: int, wall0_s: float, seed: int) -> None:
        self.batch, self.chunk, self.wall0_s = batch, chunk, wall0_s
        self.rng = random.Random(seed)
        self.running: list[_Req] = []
        self.n = 0
        self.output_tokens = 0
        self._step: list[tuple[_Req, int]] = []  # the scheduled step's members and tokens

    def _admit(self, t_s: float) -> None:
        while len(self.running) < self.batch:
            self.n += 1
            engine_id = f"chatcmpl-bench{self.n:09d}-{self.rng.getrandbits(32):08x}"
            arrival = self.wall0_s + t_s - self.rng.uniform(0.0, 0.5)  # waited in the queue
            prompt, out = self.rng.randint(128, 2048), self.rng.randint(64, 512)
            self.running.append(_Req(engine_id, prompt, arrival, out))

    def schedule(self, t_s: float) -> tuple[list[str], list[int], list[int]]:
        """One step's members, scheduled tokens and tokens already computed (prefill budget: chunk)."""
        self._admit(t_s)
        self._step = []
        budget = self.chunk
        for r in self.running:
            if r.computed < r.num_prompt_tokens:
                k = min(r.num_prompt_tokens - r.computed, budget)
                if k == 0:
                    continue
                budget -= k
            else:
                k = 1
            self._step.append((r, k))
        return (
            [r.engine_id for r, _ in self._step],
            [k for _, k in self._step],
            [r.computed for r, _ in self._step],
        )

    def advance(self) -> list[_Req]:
        """The scheduled step ran: KV and outputs move on; returns the requests that finished."""
        done: list[_Req] = []
        for r, k in self._step:
            r.computed += k
            if r.computed >= r.num_prompt_tokens:  # last prefill chunk or a decode: one new token
                r.generated += 1
                self.output_tokens += 1
                if r.generated >= r.output_len:
                    done.append(r)
        if done:
            gone = {r.engine_id for r in done}
            self.running = [r for r in self.running if r.engine_id not in gone]
        return done


def replay_trace(path: Path, seconds: float, seed: int) -> None:
    """A replay-meter CSV: one device, the counter updating every 100 ms at 150-650 W."""
    rng = random.Random(seed)
    energy_j = 1_000.0
    lines = ["# jouletrace replay trace v1", "# synthetic: benchmarks/sidecar_cpu.py", "t_s,device,energy_j"]
    for i in range(int(seconds / COUNTER_PERIOD_S)):
        t_s = i * COUNTER_PERIOD_S
        power_w = 400.0 + 200.0 * math.sin(t_s / 7.0) + rng.uniform(-50.0, 50.0)
        energy_j += power_w * COUNTER_PERIOD_S
        lines.append(f"{t_s:.6f},GPU-bench,{energy_j:.3f}")
    path.write_text("\n".join(lines) + "\n")


def stream(port: int, seconds: float, step_s: float, batch: int, chunk: int) -> tuple[int, int]:
    """Play the engine for ``seconds`` in real time; returns (steps, output tokens)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mono0, wall0 = time.monotonic(), time.time()
    sim_t = 0.0
    engine = Engine(batch, chunk, wall0, seed=1)
    requests: dict[str, _Req] = {}
    hook = StepStream(
        "bench-llm",
        ("127.0.0.1", port),
        clock=lambda: mono0 + sim_t,
        wall=lambda: wall0 + sim_t,
        send=lambda data: sock.sendto(data, ("127.0.0.1", port)),
    )
    steps = 0
    while sim_t < seconds:
        ids, sched, before = engine.schedule(sim_t)
        for r in engine.running:
            requests.setdefault(r.engine_id, r)
        key = object()
        hook.scheduled(key, mono0 + sim_t, ids, sched, before, requests.__getitem__)
        sim_t += step_s
        hook.ended(key, mono0 + sim_t)
        for r in engine.advance():
            hook.finished(r.engine_id, r.generated, "length", aborted=False)
            del requests[r.engine_id]
        steps += 1
        hook.maybe_flush(idle=False)
        lag_s = mono0 + sim_t - time.monotonic()
        if lag_s > 0:
            time.sleep(lag_s)
    hook.flush()
    sock.close()
    return steps, engine.output_tokens


def cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def main_thread_cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of the process's main thread (the event loop: taps, tick, HTTP); the rest is
    the meter's poller thread and any helper threads."""
    for thread in proc.threads():
        if thread.id == proc.pid:
            return float(thread.user_time + thread.system_time)
    return 0.0


def hook_counts(http_port: int) -> dict[str, float]:
    """The sidecar's scheduler-hook counters and its final records, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=60) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {"records_final": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "jouletrace_tap_events_total"
                and sample.labels["jouletrace_tap"] == "vllm_hook"
            ):
                out[sample.labels["outcome"]] = sample.value
            elif sample.name == "gen_ai_server_request_energy_joules_count":
                out["records_final"] += sample.value
    return out


def profile(pid: int, seconds: float, out: str) -> subprocess.Popen[bytes]:
    """py-spy sampling the sidecar (another process: its CPU is not the sidecar's), as collapsed stacks."""
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [
        str(spy) if spy.exists() else "py-spy",
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        "250",
    ]
    cmd += ["--format", "raw", "--nonblocking", "--output", out]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=40.0, help="traffic seconds (the idle window as long)"
    )
    parser.add_argument("--step-ms", type=float, default=12.5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=2048, help="prefill tokens per step (chunked prefill)")
    parser.add_argument("--profile", default="", help="py-spy's collapsed stacks of the traffic window here")
    args = parser.parse_args()
    with scratch_dir("jouletrace-cpu-") as work:  # trace, ledger and log: removed at the end
        return measure(args, work)


def measure(args: argparse.Namespace, work: Path) -> int:
    """An idle window, then the stream of steps; prints the sidecar's CPU over its idle baseline."""
    window_s = args.seconds + SETTLE_S + 1.0
    replay_trace(work / "trace.csv", 2 * window_s + 300.0, seed=0)
    hook_port, http_port = free_port(socket.SOCK_DGRAM), free_port()
    knobs = ["--meter", "replay", "--replay-path", str(work / "trace.csv"), "--port", str(http_port)]
    knobs += [
        "--hook-port",
        str(hook_port),
        "--plugin-port",
        "0",
        "--otlp-port",
        "0",
        "--proxy-wire-port",
        "0",
    ]
    knobs += ["--ledger-path", str(work / "ledger.db"), "--settle-s", str(SETTLE_S), "--log-level", "warning"]
    proc = Process("sidecar", sidecar_command(knobs), work / "sidecar.log")
    try:
        wait_http(f"http://127.0.0.1:{http_port}/readyz", 120, proc)
        ps = psutil.Process(proc.popen.pid)
        time.sleep(1.0)
        c0 = cpu_s(ps)
        time.sleep(window_s)
        idle_s = cpu_s(ps) - c0
        spy = profile(ps.pid, window_s, args.profile) if args.profile else None
        c0, t0, m0 = cpu_s(ps), time.monotonic(), main_thread_cpu_s(ps)
        steps, tokens = stream(hook_port, args.seconds, args.step_ms / 1e3, args.batch, args.chunk)
        sent_s = time.monotonic() - t0
        time.sleep(max(window_s - (time.monotonic() - t0), 0.0))
        counts = hook_counts(http_port)
        while counts["records_final"] < counts.get("finished", 0) and time.monotonic() - t0 < window_s + 30:
            time.sleep(0.5)  # a loaded box: the sidecar is still sealing the last ticks
            counts = hook_counts(http_port)
        busy_s, busy_window_s = cpu_s(ps) - c0, time.monotonic() - t0
        loop_s = main_thread_cpu_s(ps) - m0
        if spy is not None:
            spy.wait(30)
    finally:
        code = proc.stop()
    if code != 0:
        print(f"sidecar exited with {code}:\n{proc.tail()}")
    print("sidecar on the replay meter (synthetic 100 ms counter trace; no GPU)")
    print(
        f"stream: batch {args.batch}, {steps} steps of {args.step_ms} ms in {sent_s:.1f} s wall "
        f"({steps / sent_s:.0f} steps/s, {tokens / sent_s:,.0f} output tokens/s), {tokens} output tokens"
    )
    print(f"sidecar counted: {', '.join(f'{k} {v:.0f}' for k, v in sorted(counts.items()))}")
    idle_rate = idle_s / window_s
    over_s = busy_s - idle_rate * busy_window_s  # the idle baseline over the traffic window's length
    print(f"idle baseline: {idle_s:.2f} CPU s in {window_s:.1f} s ({100 * idle_rate:.1f} % of a core)")
    print(
        f"with traffic:  {busy_s:.2f} CPU s in {busy_window_s:.1f} s ({100 * busy_s / busy_window_s:.1f} % "
        f"of a core); {1e6 * busy_s / steps:.0f} us/step, {1e6 * over_s / steps:.0f} us/step over idle"
    )
    print(f"  of which the event loop thread {loop_s:.2f} s, other threads (poller) {busy_s - loop_s:.2f} s")
    print(f"over idle: {1e3 * over_s / tokens:.4f} cpu s per 1000 tokens")
    print(f"cpu s per 1000 tokens {1e3 * busy_s / tokens:.4f}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
