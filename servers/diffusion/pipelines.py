"""diffusers pipelines loaded from a folder (or a hub id), one call per batch. torch lives here.

:class:`PipelineRunner` holds at most one image and one video pipeline and
runs a :class:`~servers.diffusion.batcher.Batch` as one pipeline call: the
members' prompts are repeated ``n`` times each, and every item gets its own
generator (seeded ``seed + k`` for the k-th image of a request with a seed,
so results do not depend on who shared the batch). Images come back as PIL
images, videos as float arrays ``(frames, height, width, 3)`` in [0, 1].
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers.diffusion.batcher import Batch

__all__ = ["DTYPES", "LoadedPipeline", "PipelineRunner", "detect_kind", "load_pipeline"]

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")
_VIDEO_CLASSES = {"WanPipeline", "CogVideoXPipeline", "LTXPipeline", "AnimateDiffPipeline", "MochiPipeline"}


def detect_kind(model: str) -> str:
    """``image`` or ``video``, from the folder's ``model_index.json`` (hub ids: from the name)."""
    index = Path(model) / "model_index.json"
    name = json.loads(index.read_text())["_class_name"] if index.is_file() else model
    is_video = name in _VIDEO_CLASSES or "video" in name.lower() or "wan" in name.lower()
    return "video" if is_video else "image"


def model_name(model: str) -> str:
    """The name requests and metrics use: a folder's base name, or the hub id as given."""
    path = Path(model)
    return path.name if path.exists() else model


@dataclass
class LoadedPipeline:
    """One diffusers pipeline on its device."""

    name: str
    kind: str
    pipe: Any
    device: str
    accepts: frozenset[str]  # keyword arguments its __call__ takes

    def __call__(self, batch: Batch, max_sequence_length: int | None) -> list[Any]:
        import torch

        shape = batch.shape
        prompts: list[str] = []
        generators: list[Any] = []
        for job in batch.jobs:
            base = job.spec.seed if job.spec.seed is not None else random.randrange(2**62)
            for k in range(job.spec.n):
                prompts.append(job.spec.prompt)
                generators.append(torch.Generator(device="cpu").manual_seed(base + k))
        kwargs: dict[str, Any] = {
            "prompt": prompts,
            "height": shape.height,
            "width": shape.width,
            "num_inference_steps": shape.steps,
            "guidance_scale": shape.guidance,
            "generator": generators,
        }
        if shape.kind == "video":
            kwargs["num_frames"] = shape.frames
            kwargs["output_type"] = "np"
            if max_sequence_length and "max_sequence_length" in self.accepts:
                kwargs["max_sequence_length"] = max_sequence_length
        with torch.inference_mode():
            out = self.pipe(**kwargs)
        if shape.kind == "video":
            return [frames for frames in out.frames]
        return list(out.images)


def load_pipeline(model: str, device: str = "cpu", dtype: str = "float32") -> LoadedPipeline:
    """Load ``model`` (a folder from ``jouletrace models build``, or a hub id) onto ``device``."""
    import torch

    diffusers: Any = importlib.import_module("diffusers")

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    pipe = diffusers.DiffusionPipeline.from_pretrained(model, dtype=getattr(torch, dtype))
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    accepts = frozenset(inspect.signature(pipe.__call__).parameters)
    kind = detect_kind(model) if Path(model).exists() else detect_kind(type(pipe).__name__)
    log.info("loaded %s (%s, %s) on %s as %s", model, type(pipe).__name__, dtype, device, kind)
    return LoadedPipeline(model_name(model), kind, pipe, device, accepts)


class PipelineRunner:
    """The served pipelines by kind; runs a batch with the pipeline of its kind."""

    def __init__(self, pipelines: list[LoadedPipeline], *, max_sequence_length: int | None = None) -> None:
        self.by_kind: dict[str, LoadedPipeline] = {}
        for p in pipelines:
            if p.kind in self.by_kind:
                raise ValueError(f"two {p.kind} models: {self.by_kind[p.kind].name} and {p.name}; serve one")
            self.by_kind[p.kind] = p
        self.max_sequence_length = max_sequence_length

    @property
    def models(self) -> dict[str, str]:
        """kind -> served model name."""
        return {kind: p.name for kind, p in self.by_kind.items()}

    def warm_up(self) -> None:
        """Nothing to do eagerly; the first batch of each shape pays its kernel set-up."""

    def __call__(self, batch: Batch) -> list[Any]:
        return self.by_kind[batch.shape.kind](batch, self.max_sequence_length)
