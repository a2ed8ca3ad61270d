"""Steps 1-4 of a run (:mod:`loadgen.runner`): skip what cannot run, pre-flight, build the requests.

1. decide which of the mix's tasks are skipped and why (:func:`skips`: no multimodal
   model, no diffusion server, no LLM server);
2. pre-flight (:func:`preflight`): the LLM server (``/v1/models``: model id, context
   length), the diffusion server, the sidecar (``/healthz`` and its energy counter);
3. calibrate tokens per word through ``/tokenize`` (:func:`calibrate`, else the heuristic);
4. allocate requests to tasks by weight and build them (synthetic or dataset rows), then
   fit each prompt to its drawn length as the server counts it (:mod:`loadgen.prompt_fit`).

:func:`plan_run` does 2-4 and returns a :class:`Plan`; nothing is sent before it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import numpy as np

from loadgen.client import ServerInfo, calibrate_tokens_per_word, probe_server
from loadgen.config import RunConfig
from loadgen.datasets import load_rows, requests_from_rows
from loadgen.errors import InputError
from loadgen.factories import FactoryOptions, make_requests
from loadgen.mixes import Mix, allocate
from loadgen.prompt_fit import FitStats, fit_prompts
from loadgen.prompts import PromptBuilder
from loadgen.records import Request
from loadgen.sidecar_client import probe_sidecar
from loadgen.sidecar_energy import fetch_device_names
from loadgen.tasks import TaskSpec, scale_task

__all__ = ["Plan", "build", "calibrate", "plan_run", "preflight", "skips"]


def skips(mix: Mix, tasks: dict[str, TaskSpec], cfg: RunConfig) -> dict[str, str]:
    """Task -> why it is skipped, for every task of the mix this run cannot serve."""
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


async def preflight(
    session: aiohttp.ClientSession, cfg: RunConfig, active: list[TaskSpec]
) -> ServerInfo | None:
    """Probe every server the active tasks need (raise naming the flag); the LLM server's info."""
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


def build(
    cfg: RunConfig,
    mix: Mix,
    specs: dict[str, TaskSpec],
    counts: list[int],
    opts: FactoryOptions,
    builder_for: Callable[[np.random.Generator], PromptBuilder],
) -> list[Request]:
    """``counts[i]`` requests of the mix's i-th task: from its dataset rows, else synthetic."""
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


@dataclass
class Plan:
    """What pre-flight and building decided: the served model, scaled tasks, the requests."""

    model: str
    max_len: int | None
    specs: dict[str, TaskSpec]
    requests: list[Request]
    method: str  # how prompt lengths were measured
    fit: FitStats | None
    gpu: str


async def calibrate(
    session: aiohttp.ClientSession, cfg: RunConfig, info: ServerInfo | None, model: str
) -> tuple[float, str]:
    """Tokens per word from the server's ``/tokenize``, else the 1:1 heuristic; and how it was found."""
    if info is not None and cfg.tokenize:
        measured = await calibrate_tokens_per_word(session, cfg.server_url.rstrip("/"), model)
        if measured is not None:
            return measured, f"tokenize (server's /tokenize: {measured:.3f} tokens/word)"
    return 1.0, "heuristic (1 word = 1 token)"


def _prompts(tpw: float, method: str) -> Callable[[np.random.Generator], PromptBuilder]:
    return lambda rng: PromptBuilder(rng, tokens_per_word=tpw, method=method)


def _first_set(*values: int | None) -> int:
    """The first value that is set (0 is set: ``--requests 0`` is refused, not read as unset)."""
    return next(v for v in values if v is not None)


async def plan_run(
    session: aiohttp.ClientSession, cfg: RunConfig, mix: Mix, active_mix: Mix, specs_raw: dict[str, TaskSpec]
) -> Plan:
    """Steps 2-4 of the module docstring: pre-flight, calibrate, build and fit the requests."""
    info = await preflight(session, cfg, [specs_raw[e.task] for e in active_mix.entries])
    model = cfg.model or (info.models[0] if info and info.models else "")
    max_len = cfg.max_model_len or (info.max_model_len if info else None)
    specs = {k: scale_task(v, cfg.scale, max_len, cfg.prompt_factor) for k, v in specs_raw.items()}
    tpw, method = await calibrate(session, cfg, info, model)
    opts = FactoryOptions(
        model=model,
        max_model_len=max_len,
        ignore_eos=cfg.ignore_eos,
        fim_template=cfg.fim_template,
        diffusion_model=cfg.diffusion_model,
    )
    counts = allocate([e.weight for e in active_mix.entries], _first_set(cfg.requests, mix.requests, 64))
    requests = build(
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
    return Plan(model, max_len, specs, requests, method, fit, gpu)
