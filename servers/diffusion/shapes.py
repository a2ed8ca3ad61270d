"""Request bodies -> validated job specs; the limits that bound them.

Every rejection is an :class:`InvalidRequest` naming the field and the limit,
answered as HTTP 400 (404 for a model that is not served) in the OpenAI error
shape. A :class:`Shape` is what must match for requests to share a pipeline
call: kind, model, width, height, frames, steps and guidance.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["InvalidRequest", "JobSpec", "Limits", "Shape", "parse_image", "parse_video"]

_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


class InvalidRequest(ValueError):
    """A request field is missing, malformed or outside its limit."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


@dataclass(frozen=True, slots=True)
class Limits:
    """What a request may ask for. Sizes in pixels; each side a multiple of ``size_multiple``."""

    max_n: int = 8  # images per request (<= max_batch_size, so a request fits one batch)
    min_side_px: int = 32
    max_side_px: int = 1024
    size_multiple: int = 16  # Wan: VAE 8 x patch 2; SD: VAE 8
    max_steps: int = 100
    max_frames: int = 81
    frame_multiple: int = 4  # frames = 4k + 1 (video VAE compresses time by 4)
    max_fps: int = 60
    max_guidance: float = 30.0
    max_prompt_chars: int = 4000


@dataclass(frozen=True, slots=True)
class Shape:
    """What requests must share to run as one pipeline call."""

    kind: str  # image, video
    model: str
    width: int  # px
    height: int  # px
    frames: int  # 1 for images
    steps: int  # denoising steps
    guidance: float

    @property
    def units_per_item(self) -> int:
        """Work units of one image or video: pixels x frames x steps."""
        return self.width * self.height * self.frames * self.steps


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A validated request: its shape, what to generate, and how to return it."""

    shape: Shape
    prompt: str
    n: int  # images (1 for a video)
    seed: int | None
    response_format: str  # b64_json, url
    fps: int = 0  # videos only
    container: str = "png"  # png, mp4, gif


def _int(body: dict[str, Any], field: str, default: int | None, low: int, high: int) -> int:
    value = body.get(field, default)
    if value is None:
        raise InvalidRequest(field, f"is required (an integer {low}..{high})")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(field, f"must be an integer {low}..{high}, got {value!r}")
    if not low <= value <= high:
        raise InvalidRequest(field, f"{value} is out of range; must be {low}..{high}")
    return value


def _prompt(body: dict[str, Any], limits: Limits) -> str:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("prompt", "must be a non-empty string")
    if len(prompt) > limits.max_prompt_chars:
        raise InvalidRequest("prompt", f"{len(prompt)} characters; the limit is {limits.max_prompt_chars}")
    return prompt


def _size(body: dict[str, Any], default: str, limits: Limits) -> tuple[int, int]:
    size = body.get("size", default)
    rule = (
        f"'WIDTHxHEIGHT' with each side a multiple of {limits.size_multiple} "
        f"from {limits.min_side_px} to {limits.max_side_px} px"
    )
    match = _SIZE.match(size) if isinstance(size, str) else None
    if match is None:
        raise InvalidRequest("size", f"{size!r} is not {rule}")
    width, height = int(match.group(1)), int(match.group(2))
    for side in (width, height):
        if not limits.min_side_px <= side <= limits.max_side_px or side % limits.size_multiple:
            raise InvalidRequest("size", f"{size!r} is not allowed; must be {rule}")
    return width, height


def _guidance(body: dict[str, Any], default: float, limits: Limits) -> float:
    value = body.get("guidance", body.get("guidance_scale", default))
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest("guidance", f"must be a number 0..{limits.max_guidance:g}, got {value!r}")
    if not 0.0 <= value <= limits.max_guidance:
        raise InvalidRequest("guidance", f"{value} is out of range; must be 0..{limits.max_guidance:g}")
    return float(value)


def _seed(body: dict[str, Any]) -> int | None:
    seed = body.get("seed")
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise InvalidRequest("seed", f"must be an integer 0..2^63-1, got {seed!r}")
    return seed


def _choice(body: dict[str, Any], field: str, default: str, allowed: tuple[str, ...]) -> str:
    value = body.get(field, default)
    if value not in allowed:
        raise InvalidRequest(field, f"{value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _model(body: dict[str, Any], kind: str, served: str | None) -> str:
    if served is None:
        raise InvalidRequest("model", f"no {kind} model is served here", status=404)
    asked = body.get("model")
    if asked is not None and asked != served:
        raise InvalidRequest("model", f"{asked!r} is not served; the {kind} model is {served!r}", status=404)
    return served


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    return body


def parse_image(body: Any, served: str | None, limits: Limits, default_steps: int = 20) -> JobSpec:
    """Validate a ``POST /v1/images/generations`` body (OpenAI shape + steps, guidance, seed)."""
    body = _object(body)
    prompt = _prompt(body, limits)
    width, height = _size(body, "512x512", limits)
    shape = Shape(
        "image",
        _model(body, "image", served),
        width,
        height,
        1,
        _int(body, "steps", default_steps, 1, limits.max_steps),
        _guidance(body, 7.5, limits),
    )
    return JobSpec(
        shape,
        prompt,
        _int(body, "n", 1, 1, limits.max_n),
        _seed(body),
        _choice(body, "response_format", "b64_json", ("b64_json", "url")),
    )


def parse_video(
    body: Any,
    served: str | None,
    limits: Limits,
    default_steps: int = 20,
    video_formats: tuple[str, ...] = (),
) -> JobSpec:
    """Validate a ``POST /v1/videos/generations`` body (prompt, size, num_frames, fps, steps, seed)."""
    body = _object(body)
    prompt = _prompt(body, limits)
    width, height = _size(body, "832x480", limits)
    frames = _int(body, "num_frames", 1 + 4 * limits.frame_multiple, 1, limits.max_frames)
    if (frames - 1) % limits.frame_multiple:
        raise InvalidRequest(
            "num_frames", f"{frames} is not {limits.frame_multiple}k+1 (e.g. 9, 17, ... {limits.max_frames})"
        )
    formats = video_formats or ("mp4", "gif")
    shape = Shape(
        "video",
        _model(body, "video", served),
        width,
        height,
        frames,
        _int(body, "steps", default_steps, 1, limits.max_steps),
        _guidance(body, 5.0, limits),
    )
    return JobSpec(
        shape,
        prompt,
        1,
        _seed(body),
        _choice(body, "response_format", "b64_json", ("b64_json", "url")),
        fps=_int(body, "fps", 16, 1, limits.max_fps),
        container=_choice(body, "format", formats[0], formats),
    )
