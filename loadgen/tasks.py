"""The study's seven tasks as typed specs, loaded from the shipped ``data/tasks.yaml``.

``loadgen/data/tasks.yaml`` is a copy of the study facts (``../shared/study/tasks.yaml``
in CI); shipping it means an installed loadgen needs nothing outside the package.

A :class:`TaskSpec` carries what a request factory needs: the API, the fitted
output-length and prompt-length distributions (tokens, see :mod:`loadgen.lengths`),
media shape for the multimodal tasks and the diffusion parameters, and the study's
reference energies for the report. :func:`scale_task` shrinks a spec for small
machines (``--scale``): token lengths and caps, diffusion resolution, steps and
frames all multiply by the factor, with floors (8 tokens of prompt, 64 px, 2 steps,
5 frames; sides stay multiples of 16 and frame counts 4k + 1, as the video models
need) so a scaled request still exercises the same code path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any

import yaml

from loadgen.errors import InputError
from loadgen.lengths import LengthFit, fit_lognormal, targets_from_yaml

__all__ = [
    "DEFAULT_IMAGE_MODEL",
    "DEFAULT_VIDEO_MODEL",
    "TaskSpec",
    "load_tasks",
    "scale_task",
    "study_protocol",
]

DEFAULT_IMAGE_MODEL = "SANA-1.5"  # 20 steps at 1024x1024: the study's cheapest image configuration
DEFAULT_VIDEO_MODEL = "CogVideoX-2B"  # 480x720, 49 frames, 50 steps: the cheapest video configuration
_API_PATHS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "images": "/v1/images/generations",
    "videos": "/v1/videos/generations",
}
_UNITS = {"chat": "token", "completions": "token", "images": "image", "videos": "video"}


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task of the study, ready to make requests.

    Lengths are tokens; ``width``/``height`` pixels; ``fps`` frames per second.
    ``output``/``prompt`` are ``None`` for diffusion tasks.
    """

    id: str
    name: str
    kind: str  # llm, reasoning-llm, code-llm, multimodal-llm, diffusion-image, diffusion-video
    api: str  # chat, completions, images, videos
    requests_per_run: int
    output: LengthFit | None = None
    prompt: LengthFit | None = None
    images: int = 0  # images per chat request (Image Chat)
    video_frames: int = 0  # frames of the clip per chat request (Video Chat)
    media_side_px: int = 0  # side of the generated JPEG / video frame
    width: int = 0  # diffusion output width, px
    height: int = 0
    steps: int = 0  # diffusion denoising steps
    num_frames: int = 0  # text-to-video frames
    fps: int = 0
    diffusion_model: str = ""
    reference: dict[str, Any] = field(default_factory=dict)  # the study's energies, for the report

    @property
    def path(self) -> str:
        """The server path this task posts to."""
        return _API_PATHS[self.api]

    @property
    def unit(self) -> str:
        """What one unit of output is: token, image or video."""
        return _UNITS[self.api]

    @property
    def multimodal(self) -> bool:
        """True for Image Chat and Video Chat (they need a model that takes images/video)."""
        return self.kind == "multimodal-llm"

    @property
    def diffusion(self) -> bool:
        """True for Text to Image and Text to Video."""
        return self.api in ("images", "videos")


@cache
def _raw() -> dict[str, Any]:
    text = resources.files("loadgen").joinpath("data/tasks.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def study_protocol() -> dict[str, str]:
    """The study's measurement protocol, as published (for results.json)."""
    return {str(k): str(v) for k, v in _raw()["measurement_protocol"].items()}


def _prompt_fit(task: dict[str, Any]) -> LengthFit:
    stats = task.get("input_tokens", {})
    targets = targets_from_yaml(stats)
    if not targets and "text_mean" in stats:
        targets = {"mean": float(stats["text_mean"])}
    return fit_lognormal(targets or {"mean": 100.0}, cap=32_768, minimum=8)


def _task_from_yaml(task: dict[str, Any], image_model: str, video_model: str) -> TaskSpec:
    api = str(task["api"])
    base = TaskSpec(
        id=str(task["id"]),
        name=str(task["name"]),
        kind=str(task["kind"]),
        api=api,
        requests_per_run=int(task.get("requests_per_run", 1)),
        reference={k: v for k, v in task.items() if k.startswith("energy_")},
    )
    if api in ("chat", "completions"):
        cap = int(task["max_output_tokens"])
        out = fit_lognormal(targets_from_yaml(task["output_tokens"]), cap=cap)
        inp = task.get("input_tokens", {})
        return replace(
            base,
            output=out,
            prompt=_prompt_fit(task),
            images=int(inp.get("images", 0)),
            video_frames=int(inp.get("frames", 0)),
            media_side_px=448 if base.kind == "multimodal-llm" else 0,
        )
    if api == "images":
        steps = task["steps_by_model"]
        if image_model not in steps:
            raise InputError(f"unknown image model {image_model!r}; the study's are {sorted(steps)}")
        w, h = task["resolution"]
        return replace(
            base, width=int(w), height=int(h), steps=int(steps[image_model]), diffusion_model=image_model
        )
    configs = task["configs"]
    if video_model not in configs:
        raise InputError(f"unknown video model {video_model!r}; the study's are {sorted(configs)}")
    c = configs[video_model]
    h, w = c["resolution"]
    return replace(
        base,
        width=int(w),
        height=int(h),
        steps=int(c["steps"]),
        num_frames=int(c["frames"]),
        fps=int(c["fps"]),
        diffusion_model=video_model,
    )


def load_tasks(
    image_model: str = DEFAULT_IMAGE_MODEL, video_model: str = DEFAULT_VIDEO_MODEL
) -> dict[str, TaskSpec]:
    """The seven tasks by id, in the study's order."""
    return {str(t["id"]): _task_from_yaml(t, image_model, video_model) for t in _raw()["tasks"]}


def _px(value: int, factor: float) -> int:
    """Scale a pixel size, keep it a multiple of 16, at least 64."""
    return max(64, round(value * factor / 16) * 16)


def _frames(value: int, factor: float) -> int:
    """Scale a frame count, keep it 4k + 1 (video VAEs compress time by 4), at least 5."""
    return max(5, 4 * round((value * factor - 1) / 4) + 1)


def scale_task(
    spec: TaskSpec, factor: float, max_model_len: int | None = None, prompt_factor: float | None = None
) -> TaskSpec:
    """``spec`` shrunk (or grown) by ``factor`` and fitted into ``max_model_len`` tokens.

    ``prompt_factor`` (default ``factor``) scales prompt lengths on their own. With a
    context limit, prompts are capped at half the context and outputs at the other half
    minus a 16-token margin for the chat template; the exact per-request clip against
    the real prompt length happens in the factory.
    """
    pf = factor if prompt_factor is None else prompt_factor
    if not (0 < factor < math.inf and 0 < pf < math.inf):
        raise InputError(f"--scale and --prompt-scale must be finite numbers > 0, got {factor} and {pf}")
    out = spec
    if spec.output is not None and spec.prompt is not None:
        o = spec.output.scaled(factor) if factor != 1 else spec.output
        p = spec.prompt.scaled(pf) if pf != 1 else spec.prompt
        if max_model_len is not None:
            p_cap = max(p.minimum, min(p.cap, max_model_len // 2))
            o_cap = max(1, min(o.cap, max_model_len - p_cap - 16))
            p = replace(p, cap=p_cap)
            o = replace(o, cap=o_cap)
        side = max(32, round(spec.media_side_px * math.sqrt(factor))) if spec.media_side_px else 0
        out = replace(spec, output=o, prompt=p, media_side_px=side)
    if spec.diffusion and factor != 1:
        out = replace(
            out,
            width=_px(spec.width, factor),
            height=_px(spec.height, factor),
            steps=max(2, math.ceil(spec.steps * factor)),
            num_frames=_frames(spec.num_frames, factor) if spec.num_frames else 0,
        )
    return out
