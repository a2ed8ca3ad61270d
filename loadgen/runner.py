"""One run: pre-flight, build requests, send them on schedule, read energy, analyse.

Order of work (nothing is sent until every check has passed):

1-4. load tasks and the mix, skip what cannot run, pre-flight, calibrate, build and fit
   the requests (:mod:`loadgen.plan`);
5. send them phase by phase (``per-task``: one phase per task, the study's protocol,
   so each task gets its own steady-state window; ``mixed``: one phase, tasks
   interleaved) while the sidecar's energy counter is sampled;
6. flush the client spans, read the sidecar: every request's energy record, the device
   energy over the run, each diffusion batch's energy (:mod:`loadgen.run_energy`);
   analyse, and put the study's published figures beside each task (:mod:`loadgen.reference`).
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from loadgen.analysis import analyse_phase, task_summary
from loadgen.arrivals import Schedule, parse_arrivals
from loadgen.client import send
from loadgen.config import RunConfig
from loadgen.conservation import client_lag, conservation
from loadgen.mixes import Mix, load_mix
from loadgen.plan import Plan, plan_run, skips
from loadgen.records import Request, Result
from loadgen.reference import task_reference
from loadgen.run_energy import RunEnergy, read_energy
from loadgen.sidecar_client import EnergySampler
from loadgen.tasks import TaskSpec, load_tasks
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


def _urls(cfg: RunConfig) -> dict[str, str]:
    """The base URL of each API a request may go to."""
    llm, diffusion = cfg.server_url.rstrip("/"), (cfg.diffusion_url or "").rstrip("/")
    return {"chat": llm, "completions": llm, "images": diffusion, "videos": diffusion}


async def _send_phases(
    session: aiohttp.ClientSession,
    cfg: RunConfig,
    requests: list[Request],
    t0: float,
    tracer: ClientTracer,
    progress: Any,
) -> list[tuple[str, list[Result], Schedule]]:
    """Step 5: each phase's requests on its arrival schedule, one phase after the other."""
    urls = _urls(cfg)
    out: list[tuple[str, list[Result], Schedule]] = []
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
        out.append((name, results, schedule))
    return out


async def _send_sampled(
    session: aiohttp.ClientSession, cfg: RunConfig, requests: list[Request], t0: float, progress: Any
) -> tuple[list[tuple[str, list[Result], Schedule]], EnergySampler | None, dict[str, Any]]:
    """:func:`_send_phases` while the sidecar's energy is scraped, a scrape before and after; also
    where the client spans went (:meth:`ClientTracer.report`)."""
    url = cfg.sidecar_url.rstrip("/")
    sampler = EnergySampler(url, t0, cfg.scrape_interval_s) if url else None
    tracer = ClientTracer(cfg.otlp_endpoint)
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(session, stop)) if sampler else None
    try:
        if sampler is not None:
            await asyncio.sleep(2 * cfg.scrape_interval_s)  # a sample before the first request
        phase_results = await _send_phases(session, cfg, requests, t0, tracer, progress)
        if sampler is not None:
            await asyncio.sleep(2 * cfg.scrape_interval_s)  # a sample after the last finish
    finally:
        stop.set()
        if sampling is not None:
            await sampling
        await asyncio.to_thread(tracer.shutdown)  # the sidecar joins tasks by these spans
    return phase_results, sampler, tracer.report()


def _analyse(
    cfg: RunConfig, phase_results: list[tuple[str, list[Result], Schedule]], energy: RunEnergy
) -> list[dict[str, Any]]:
    """One analysed block per phase (:func:`loadgen.analysis.analyse_phase`)."""
    phases = []
    for name, rs, schedule in phase_results:
        unit = rs[0].request.unit if rs else "token"
        cap = cfg.batch_cap or schedule.max_in_flight or min(DEFAULT_BATCH_CAP, len(rs))
        figures = analyse_phase(
            rs, energy.samples, cap, unit, energy.idle_samples, cfg.min_window_s, energy.batches.get(name)
        )
        phases.append({"phase": name, "arrivals": schedule.describe()} | figures)
    return phases


def _diffusion_parameters(s: TaskSpec) -> dict[str, Any]:
    return {
        "size": f"{s.width}x{s.height}",
        "steps": s.steps,
        "num_frames": s.num_frames,
        "model": s.diffusion_model,
    }


def _meta(
    mix: Mix, plan: Plan, energy: RunEnergy, results: list[Result], t0_unix_s: float, spans: dict[str, Any]
) -> dict[str, Any]:
    """``RunOutcome.meta``: what was served and how lengths were drawn, the energy checks, and
    where the client spans (which carry the tasks) went."""
    specs = plan.specs
    return {
        "model": plan.model,
        "max_model_len": plan.max_len,
        "prompt_length_method": plan.method,
        "mix": {"name": mix.name, "source": mix.source, "weights": {e.task: e.weight for e in mix.entries}},
        "length_distributions": {k: o.describe() for k, s in specs.items() if (o := s.output) is not None},
        "diffusion_parameters": {k: _diffusion_parameters(s) for k, s in specs.items() if s.diffusion},
        "prompt_distributions": {k: o.describe() for k, s in specs.items() if (o := s.prompt) is not None},
        "prompt_fit": plan.fit.to_json() if plan.fit is not None else None,
        "gpu": plan.gpu,
        "energy_scrape_errors": energy.scrape_errors,
        "conservation": conservation(results, energy.samples, energy.idle_samples, t0_unix_s),
        "client_lag_s": client_lag(results, t0_unix_s),
        "energy_series": energy.series_json(),
        "client_spans": spans,
        "t0_unix_s": t0_unix_s,
    }


async def run(cfg: RunConfig, progress: Any = None) -> RunOutcome:
    """Run ``cfg`` end to end (see the module docstring)."""
    specs_raw = load_tasks(cfg.image_model, cfg.video_model)
    mix = load_mix(cfg.mix, set(specs_raw))
    skipped = skips(mix, specs_raw, cfg)
    active_mix = mix.without(set(skipped))
    # idle connections are dropped before servers do (uvicorn closes them after 5 s)
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=3.0)
    async with aiohttp.ClientSession(connector=connector) as session:
        plan = await plan_run(session, cfg, mix, active_mix, specs_raw)
        t0, t0_unix_s = time.perf_counter(), time.time()
        phase_results, sampler, spans = await _send_sampled(session, cfg, plan.requests, t0, progress)
        energy = await read_energy(
            session,
            cfg.sidecar_url.rstrip("/"),
            sampler,
            [(name, rs) for name, rs, _ in phase_results],
            t0_unix_s,
            cfg.scrape_interval_s,
            cfg.energy_wait_s,
            math.inf if spans["exported"] else 0.0,  # no client span delivered: no late task to wait for
        )
    all_results = [r for _, rs, _ in phase_results for r in rs]
    tasks = [task_summary(all_results, e.task, plan.specs[e.task].unit) for e in active_mix.entries]
    for t in tasks:
        t["study"] = task_reference(
            t["task"], model=_served(t["task"], plan.model, all_results), gpu=plan.gpu
        )
    meta = _meta(mix, plan, energy, all_results, t0_unix_s, spans)
    return RunOutcome(
        cfg, all_results, _analyse(cfg, phase_results, energy), tasks, skipped, energy.samples, meta
    )
