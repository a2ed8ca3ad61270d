"""``jouletrace loadgen``: ``run`` a mix, ``compare`` two runs (the regression gate), ``sweep``.

    jouletrace loadgen run --mix study-llm --server-url http://127.0.0.1:8000 --out results/
    jouletrace loadgen compare results/base results/new --max-regression 10%
    jouletrace loadgen sweep --mix study-llm --concurrency 1,4,16,64 --out results/sweep
    jouletrace loadgen sweep --mix study-llm --batch-caps 8,16,32 --vllm-model llama --out results/caps
    jouletrace loadgen demo --out results/demo     # CPU stack + short study-all (make demo)

A concurrency sweep drives the server you name; a batch-cap sweep starts vLLM with each
``--max-num-seqs`` (and a sidecar) through the vLLM launcher (:mod:`loadgen.sweep`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]

_HELP = {
    "mix": "a preset (study-llm, study-diffusion, study-all) or a mix YAML file",
    "server_url": "OpenAI-compatible LLM server base URL",
    "diffusion_url": "jouletrace diffusion server base URL ('' skips the diffusion tasks)",
    "sidecar_url": "jouletrace sidecar base URL ('' runs without energy)",
    "otlp_endpoint": "OTLP/gRPC host:port for the client spans ('' keeps them local)",
    "model": "model name to request ('' = the first the server lists)",
    "diffusion_model": "model name sent to the diffusion server ('' = none: the server's own)",
    "requests": "total requests (split over tasks by weight)",
    "arrivals": "all | poisson:RATE | constant:RATE | gamma:RATE:BURSTINESS | concurrency:C "
    "| replay:PATH[:SPEED]",
    "phases": "per-task (one steady-state window per task), mixed, or auto (per-task for 'all')",
    "batch_cap": "B of the steady-state window (the server's max batch; default: concurrency, else 256)",
    "min_window_s": "shortest steady-state window, s (shorter: the whole phase is used; the study: 20-30 s)",
    "scale": "multiply token lengths/caps, diffusion resolution, steps and frames (small machines: 0.05)",
    "prompt_scale": "multiply prompt lengths by this instead of --scale (0: same as --scale)",
    "gpu": "GPU name for the study's figures, e.g. H100 ('' = the sidecar's device names)",
    "max_model_len": "context limit in tokens (default: what the server reports)",
    "seed": "seed of every random draw",
    "timeout_s": "per-request timeout, seconds",
    "energy_wait_s": "seconds to wait for final energy records after the run",
    "scrape_interval_s": "seconds between reads of the sidecar's energy counter",
    "enable_multimodal": "send Image Chat / Video Chat (the served model takes images and video)",
    "ignore_eos": "enforce drawn output lengths with ignore_eos (vLLM); --no-ignore-eos lets outputs end",
    "tokenize": "fit each prompt to its drawn length with the server's /tokenize, chat template included "
    "(--no-tokenize: 1 word = 1 token)",
    "fim_template": "FIM template with {prefix} and {suffix} for Code Completion",
    "image_model": "study model whose steps Text to Image uses",
    "video_model": "study model whose resolution/frames/steps Text to Video uses",
    "run_id": "prefix of request ids (X-Request-Id)",
    "out_dir": "folder for results.json, requests.csv and plots ('' writes none)",
}


def _add_run_flags(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    from loadgen.config import RunConfig

    for f in dataclasses.fields(RunConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=_HELP[f.name])
        elif f.name in ("requests", "batch_cap", "max_model_len"):
            p.add_argument(flag, type=int, default=None, help=_HELP[f.name])
        else:
            cast = type(default)
            text = _HELP[f.name].replace("%", "%%") + " (default: %(default)s)"
            p.add_argument(flag, type=cast, default=default, help=text)
    p.add_argument("--out", dest="out_dir", default=argparse.SUPPRESS, help="alias of --out-dir")
    p.add_argument("--quiet", action="store_true", help="no progress bar or table")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``run``, ``compare``, ``demo`` and ``sweep`` sub-subcommands."""
    from loadgen.sweep import DEFAULT_VLLM_ARGS

    sub = parser.add_subparsers(dest="loadgen_command", required=True, metavar="ACTION")
    run_p = sub.add_parser("run", help="run a task mix and report energy")
    _add_run_flags(run_p)
    cmp_p = sub.add_parser("compare", help="regression gate: exit 1 when energy per unit got worse")
    cmp_p.add_argument("baseline", help="baseline results.json (or its folder)")
    cmp_p.add_argument("run", help="new results.json (or its folder)")
    cmp_p.add_argument("--max-regression", default="10%", help="allowed worsening, e.g. 10%% or 0.1")
    demo_p = sub.add_parser("demo", help="start the CPU stack (vLLM, diffusion, sidecar) and run study-all")
    demo_p.add_argument("--requests", type=int, default=120, help="total requests (default 120)")
    demo_p.add_argument("--scale", type=float, default=0.05, help="length/resolution scale (default 0.05)")
    demo_p.add_argument(
        "--prompt-scale", type=float, default=0.5,
        help="prompt length scale (default 0.5: the study's GPQA prompts fit their chat template)",
    )  # fmt: skip
    demo_p.add_argument("--out", dest="out_dir", default="results/demo", help="results folder")
    demo_p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    demo_p.add_argument("--quiet", action="store_true", help="no progress bar or table")
    sw_p = sub.add_parser("sweep", help="repeat a run over concurrency levels (J/token vs batch size)")
    _add_run_flags(sw_p, skip=("arrivals", "batch_cap", "phases"))
    sw_p.add_argument("--concurrency", default="1,2,4,8", help="comma-separated levels")
    sw_p.add_argument("--batch-caps", default="", help="comma-separated vLLM --max-num-seqs (restarts vLLM)")
    sw_p.add_argument("--vllm-model", default="llama", help="--batch-caps: model folder or tiny model name")
    sw_p.add_argument("--vllm-args", default=DEFAULT_VLLM_ARGS, help="--batch-caps: more vLLM serve flags")
    sw_p.add_argument("--sidecar-meter", default="cpu-model", help="--batch-caps: the sidecar's --meter")


def _config(args: argparse.Namespace, **override: Any) -> Any:
    from loadgen.config import RunConfig

    names = {f.name for f in dataclasses.fields(RunConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return RunConfig(**(values | override))


async def _run_one(cfg: Any, quiet: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from loadgen.runner import run as run_mix

    if quiet or not sys.stderr.isatty():
        return await run_mix(cfg)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as progress:
        return await run_mix(cfg, progress)


def _cmd_run(args: argparse.Namespace) -> int:
    from loadgen.report import print_table, to_json, write_results

    cfg = _config(args)
    cfg.make_out_dir()
    outcome = asyncio.run(_run_one(cfg, args.quiet))
    if cfg.out_path is not None:
        from loadgen.plots import plot_run

        data = write_results(outcome, cfg.out_path)
        plot_run(data, cfg.out_path)
    else:
        data = to_json(outcome)
    if not args.quiet:
        print_table(data)
        if cfg.out_path is not None:
            print(f"results: {cfg.out_path / 'results.json'}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from loadgen.compare import compare, load_results, parse_threshold, render

    threshold = parse_threshold(args.max_regression)
    rows = compare(load_results(args.baseline), load_results(args.run), threshold)
    text, status = render(rows, threshold)
    print(text)
    return status


def _cmd_sweep(args: argparse.Namespace) -> int:
    from loadgen.sweep import parse_levels, run_sweep

    caps = parse_levels(args.batch_caps, "--batch-caps") if args.batch_caps else None
    levels = None if caps else parse_levels(args.concurrency, "--concurrency")

    def show(p: dict[str, Any]) -> None:
        if not args.quiet:
            print(
                f"{p['kind']} {p['batch']}: J/token {p['j_per_token']} tokens/J {p['tokens_per_j']}",
                flush=True,
            )

    points = run_sweep(
        _config(args), lambda cfg: asyncio.run(_run_one(cfg, args.quiet)), concurrency=levels,
        batch_caps=caps, vllm_model=args.vllm_model, vllm_args=args.vllm_args,
        sidecar_meter=args.sidecar_meter, on_point=show,
    )  # fmt: skip
    if not args.quiet:
        print(json.dumps(points, indent=1, default=str))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from loadgen.config import RunConfig
    from loadgen.cpu_demo import run_cpu_demo
    from loadgen.plots import plot_run
    from loadgen.report import print_table, write_results

    cfg = RunConfig(mix="study-all", requests=args.requests, scale=args.scale, seed=args.seed, batch_cap=32,
                    prompt_scale=args.prompt_scale, out_dir=args.out_dir, energy_wait_s=60, min_window_s=5.0,
                    run_id="demo")  # fmt: skip
    out = Path(args.out_dir)
    cfg.make_out_dir()
    outcome = run_cpu_demo(cfg, lambda c: asyncio.run(_run_one(c, args.quiet)), out / "logs")
    data = write_results(outcome, out)
    plot_run(data, out)
    if not args.quiet:
        from rich.console import Console

        from loadgen.request_table import print_requests

        console = Console(width=None if sys.stdout.isatty() else 160)
        print_requests(outcome.results, console)
        print_table(data, console)
        print(f"results and plots: {out}/")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen action; returns the exit status."""
    action = args.loadgen_command
    if action == "run":
        return _cmd_run(args)
    if action == "demo":
        return _cmd_demo(args)
    if action == "compare":
        return _cmd_compare(args)
    return _cmd_sweep(args)
