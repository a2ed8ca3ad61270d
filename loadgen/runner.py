"""One run: pre-flight, build requests, send them on schedule, read energy, analyse.

Order of work (nothing is sent until every check has passed):

1. load tasks and the mix; decide which tasks are skipped and why (no multimodal
   model, no diffusion server, no LLM server);
2. pre-flight: the LLM server (``/v1/models``: model id, context length), the
   diffusion server, the sidecar (``/healthz`` and its energy counter);
3. calibrate tokens per word through ``/tokenize`` (or fall back to the heuristic);
4. allocate requests to tasks by weight and build them (synthetic or dataset rows), then
   fit each prompt to its drawn length as the server counts it (:mod:`loadgen.prompt_fit`);
5. send them phase by phase (``per-task``: one phase per task, the study's protocol,
   so each task gets its own steady-state window; ``mixed``: one phase, tasks
   interleaved) while the sidecar's energy counter is sampled;
6. flush the client spans, fetch every request's energy record and each diffusion
   batch's energy (:mod:`loadgen.batches`), analyse, and put the study's published
   figures beside each task (:mod:`loadgen.reference`).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from loadgen.analysis import analyse_phase, task_summary
from loadgen.arrivals import Schedule, parse_arrivals
from loadgen.batches import TimedBatch, measure_batches, timed_batches
from loadgen.client import ServerInfo, calibrate_tokens_per_word, probe_server, send
from loadgen.config import RunConfig
from loadgen.conservation import client_lag, conservation
from loadgen.datasets import load_rows, requests_from_rows
from loadgen.errors import InputError
from loadgen.factories import FactoryOptions, make_requests
from loadgen.mixes import Mix, allocate, load_mix
from loadgen.prompt_fit import fit_prompts
from loadgen.prompts import PromptBuilder
from loadgen.records import Request, Result
from loadgen.reference import task_reference
from loadgen.sidecar_client import EnergySampler, fetch_records, probe_sidecar
from loadgen.sidecar_energy import energy_grid, fetch_device_names, fetch_energy_series, fetch_interval_energy
from loadgen.tasks import TaskSpec, load_tasks, scale_task
from loadgen.tracing import ClientTracer

__all__ = ["RunOutcome", "run"]

DEFAULT_BATCH_CAP = 256  # vLLM's default --max-num-seqs, when neither --batch-cap nor a concurrency says


@dataclass
class RunOutcome:
    """Everything a run produced; :mod:`loadgen.report` turns it into files and tables."""

    config: RunConfig
    results: list[Result]
    phases: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    skipped: dict[str, str]
    samples: list[tuple[float, float]]
    meta: dict[str, Any] = field(default_factory=dict)


def _skips(mix: Mix, tasks: dict[str, TaskSpec], cfg: RunConfig) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in mix.entries:
        spec = tasks[e.task]
        if spec.multimodal and not cfg.enable_multimodal:
            out[e.task] = (
                "needs a multimodal model: the served model is text-only (the CPU default's tiny "
                "model); pass --enable-multimodal when it takes images and video"
            )
        elif spec.diffusion and not cfg.diffusion_url:
            out[e.task] = "no diffusion server: pass --diffusion-url"
        elif not spec.diffusion and not cfg.server_url:
            out[e.task] = "no LLM server: pass --server-url"
    return out


async def _preflight(
    session: aiohttp.ClientSession, cfg: RunConfig, active: list[TaskSpec]
) -> ServerInfo | None:
    info = None
    if any(not t.diffusion for t in active):
        info = await probe_server(session, cfg.server_url.rstrip("/"), "--server-url")
        if not (cfg.model or info.models):
            raise InputError(f"{cfg.server_url} lists no models; name one with --model")
    if any(t.diffusion for t in active):
        await probe_server(session, (cfg.diffusion_url or "").rstrip("/"), "--diffusion-url")
    if cfg.sidecar_url:
        await probe_sidecar(session, cfg.sidecar_url.rstrip("/"))
    return info


def _build(
    cfg: RunConfig,
    mix: Mix,
    specs: dict[str, TaskSpec],
    counts: list[int],
    opts: FactoryOptions,
    builder_for: Callable[[np.random.Generator], PromptBuilder],
) -> list[Request]:
    seeds = np.random.SeedSequence(cfg.seed).spawn(len(mix.entries))
    out: list[Request] = []
    for entry, n, seed in zip(mix.entries, counts, seeds, strict=True):
        spec, rng = specs[entry.task], np.random.default_rng(seed)
        prefix = f"{cfg.run_id}-{entry.task}"
        if entry.dataset:
            rows = load_rows(entry.dataset, spec)
            out += requests_from_rows(rows, spec, n, rng, opts, prefix)
        else:
            out += make_requests(spec, n, rng, builder_for(rng), opts, prefix)
    return out


async def _dispatch(
    session: aiohttp.ClientSession,
    results: list[Result],
    schedule: Schedule,
    urls: dict[str, str],
    t0: float,
    tracer: ClientTracer,
    cfg: RunConfig,
    on_done: Callable[[], None],
) -> None:
    gc.collect()
    gc.freeze()  # the requests built so far leave the collector's young generations: shorter GC pauses
    start = time.perf_counter()
    gate = asyncio.Semaphore(schedule.max_in_flight) if schedule.max_in_flight else None

    async def go(res: Result) -> None:
        try:
            if gate is not None:
                async with gate:
                    res.target_s = time.perf_counter() - t0  # closed loop: it is due when a slot frees
                    await send(session, urls[res.request.api], res, t0, tracer, cfg.timeout_s)
            else:
                await send(session, urls[res.request.api], res, t0, tracer, cfg.timeout_s)
        finally:
            on_done()

    pending: list[asyncio.Task[None]] = []
    for res, offset in zip(results, schedule.offsets_s, strict=True):
        target = start + float(offset)
        res.target_s = target - t0
        delay = target - time.perf_counter()
        if delay > 0.002:
            await asyncio.sleep(delay - 0.0015)
        while time.perf_counter() < target:
            await asyncio.sleep(0)
        pending.append(asyncio.create_task(go(res)))
    try:
        await asyncio.gather(*pending)
    finally:
        gc.unfreeze()


def _phases(cfg: RunConfig, requests: list[Request]) -> list[tuple[str, list[Request]]]:
    mode = cfg.phases
    if mode == "auto":
        mode = "per-task" if cfg.arrivals == "all" else "mixed"
    if mode == "per-task":
        order: dict[str, list[Request]] = {}
        for r in requests:
            order.setdefault(r.task, []).append(r)
        return list(order.items())
    order_idx = np.random.default_rng(cfg.seed).permutation(len(requests))
    return [("mixed", [requests[int(i)] for i in order_idx])]


def _served(task: str, llm_model: str, results: list[Result]) -> str:
    """The model that served ``task``: the diffusion server's answer for diffusion, else the LLM's."""
    for r in results:
        if r.request.task == task and r.request.unit != "token" and r.served_model:
            return r.served_model
    return llm_model


async def run(cfg: RunConfig, progress: Any = None) -> RunOutcome:
    """Run ``cfg`` end to end (see the module docstring)."""
    specs_raw = load_tasks(cfg.image_model, cfg.video_model)
    mix = load_mix(cfg.mix, set(specs_raw))
    skipped = _skips(mix, specs_raw, cfg)
    active_mix = mix.without(set(skipped))
    # idle connections are dropped before servers do (uvicorn closes them after 5 s)
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=3.0)
    async with aiohttp.ClientSession(connector=connector) as session:
        active = [specs_raw[e.task] for e in active_mix.entries]
        info = await _preflight(session, cfg, active)
        model = cfg.model or (info.models[0] if info and info.models else "")
        max_len = cfg.max_model_len or (info.max_model_len if info else None)
        specs = {k: scale_task(v, cfg.scale, max_len, cfg.prompt_factor) for k, v in specs_raw.items()}
        tpw, method = 1.0, "heuristic (1 word = 1 token)"
        if info is not None and cfg.tokenize:
            measured = await calibrate_tokens_per_word(session, cfg.server_url.rstrip("/"), model)
            if measured is not None:
                tpw, method = measured, f"tokenize (server's /tokenize: {measured:.3f} tokens/word)"
        opts = FactoryOptions(
            model=model,
            max_model_len=max_len,
            ignore_eos=cfg.ignore_eos,
            fim_template=cfg.fim_template,
            diffusion_model=cfg.diffusion_model,
        )
        total = cfg.requests or mix.requests or 64
        counts = allocate([e.weight for e in active_mix.entries], total)
        requests = _build(
            cfg,
            active_mix,
            specs,
            counts,
            opts,
            lambda rng: PromptBuilder(rng, tokens_per_word=tpw, method=method),
        )
        fit = None
        if info is not None and cfg.tokenize and method.startswith("tokenize"):
            fit = await fit_prompts(session, cfg.server_url.rstrip("/"), model, requests, tpw)
            method += (
                f"; each prompt fitted to its target with /tokenize (chat template applied): {fit.to_json()}"
            )
        for req in requests:
            req.slot = None  # the closures are not needed any more
        gpu = cfg.gpu
        if not gpu and cfg.sidecar_url:
            gpu = ", ".join(await fetch_device_names(session, cfg.sidecar_url.rstrip("/")))
        urls = {
            "chat": cfg.server_url.rstrip("/"),
            "completions": cfg.server_url.rstrip("/"),
            "images": (cfg.diffusion_url or "").rstrip("/"),
            "videos": (cfg.diffusion_url or "").rstrip("/"),
        }
        tracer = ClientTracer(cfg.otlp_endpoint)
        t0, t0_unix_s = time.perf_counter(), time.time()
        sampler = (
            EnergySampler(cfg.sidecar_url.rstrip("/"), t0, cfg.scrape_interval_s) if cfg.sidecar_url else None
        )
        stop = asyncio.Event()
        sampling = asyncio.create_task(sampler.run(session, stop)) if sampler else None
        phase_results: list[tuple[str, list[Result], Schedule]] = []
        try:
            if sampler is not None:
                await asyncio.sleep(2 * cfg.scrape_interval_s)  # a sample before the first request
            for name, reqs in _phases(cfg, requests):
                schedule = parse_arrivals(cfg.arrivals, len(reqs), cfg.seed)
                results = [Result(request=r, target_s=0.0) for r in reqs[: len(schedule)]]
                for r in results:
                    r.request.phase = name
                bar = progress.add_task(name, total=len(results)) if progress is not None else None

                def advance(bar: Any = bar) -> None:
                    if progress is not None:
                        progress.advance(bar)

                await _dispatch(session, results, schedule, urls, t0, tracer, cfg, advance)
                phase_results.append((name, results, schedule))
            if sampler is not None:
                await asyncio.sleep(2 * cfg.scrape_interval_s)  # a sample after the last finish
        finally:
            stop.set()
            if sampling is not None:
                await sampling
            await asyncio.to_thread(tracer.shutdown)  # the sidecar joins tasks by these spans
        all_results = [r for _, rs, _ in phase_results for r in rs]
        batches: dict[str, list[TimedBatch]] = {}
        series, note = None, "no sidecar"
        if cfg.sidecar_url:
            url = cfg.sidecar_url.rstrip("/")
            await fetch_records(session, url, all_results, cfg.energy_wait_s)
            if sampler is not None:
                await sampler.sample_once(session)  # idle sealed past every final record
            if sampler is not None and len(sampler.samples) >= 2:
                first_s = min(sampler.samples[0][0], *(t for t, _ in sampler.idle_samples[:1]))
                grid = energy_grid(first_s, sampler.samples[-1][0], cfg.scrape_interval_s)
                series, note = await fetch_energy_series(session, url, t0_unix_s, grid, cfg.energy_wait_s)
            for name, rs, _ in phase_results:
                if rs and rs[0].request.unit != "token":
                    batches[name] = timed_batches(rs)
                    await measure_batches(
                        batches[name],
                        lambda a, b: fetch_interval_energy(session, url, a, b, cfg.energy_wait_s),
                    )
    samples = sampler.samples if sampler else []
    if series is not None:
        samples = series
    idle_samples = sampler.idle_samples if sampler else []
    phases = []
    for name, rs, schedule in phase_results:
        unit = rs[0].request.unit if rs else "token"
        cap = cfg.batch_cap or schedule.max_in_flight or min(DEFAULT_BATCH_CAP, len(rs))
        phases.append(
            {"phase": name, "arrivals": schedule.describe()}
            | analyse_phase(rs, samples, cap, unit, idle_samples, cfg.min_window_s, batches.get(name))
        )
    tasks = [task_summary(all_results, e.task, specs[e.task].unit) for e in active_mix.entries]
    for t in tasks:
        t["study"] = task_reference(t["task"], model=_served(t["task"], model, all_results), gpu=gpu)
    meta = {
        "model": model,
        "max_model_len": max_len,
        "prompt_length_method": method,
        "mix": {"name": mix.name, "source": mix.source, "weights": {e.task: e.weight for e in mix.entries}},
        "length_distributions": {k: o.describe() for k, s in specs.items() if (o := s.output) is not None},
        "diffusion_parameters": {
            k: {
                "size": f"{s.width}x{s.height}",
                "steps": s.steps,
                "num_frames": s.num_frames,
                "model": s.diffusion_model,
            }
            for k, s in specs.items()
            if s.diffusion
        },
        "prompt_distributions": {k: o.describe() for k, s in specs.items() if (o := s.prompt) is not None},
        "prompt_fit": fit.to_json() if fit is not None else None,
        "gpu": gpu,
        "energy_scrape_errors": sampler.errors if sampler else None,
        "conservation": conservation(all_results, samples, idle_samples, t0_unix_s),
        "client_lag_s": client_lag(all_results, t0_unix_s),
        "energy_series": {
            "source": "sidecar timeline (/v1/energy)" if series is not None else "scrapes of /metrics",
            "points": len(samples),
            "scrapes": len(sampler.samples) if sampler else 0,
            "note": note,
        },
        "t0_unix_s": t0_unix_s,
    }
    return RunOutcome(cfg, all_results, phases, tasks, skipped, samples, meta)
