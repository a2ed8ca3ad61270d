"""Request bodies -> validated job specs; the limits that bound them.

Bodies are validated by pydantic models (:class:`ImageBody`, :class:`VideoBody`):
strict JSON types (no ``"3"`` for 3, no ``true`` for 1, no NaN), unknown fields
ignored, and the server's :class:`Limits` (passed as the validation context)
checked by the fields' validators. Every rejection is an :class:`InvalidRequest`
naming the field and the limit, answered as HTTP 400 (404 for a model that is
not served) in the OpenAI error shape. A :class:`Shape` is what must match for
requests to share a pipeline call: kind, model, width, height, frames, steps
and guidance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

__all__ = [
    "ImageBody",
    "InvalidRequest",
    "JobSpec",
    "Limits",
    "Shape",
    "VideoBody",
    "parse_image",
    "parse_video",
]

_SIZE = re.compile(r"\A([0-9]{1,5})x([0-9]{1,5})\Z")  # ASCII digits only, no trailing newline


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


def _limits(info: ValidationInfo) -> Limits:
    context = info.context or {}
    limits = context.get("limits", Limits())
    assert isinstance(limits, Limits)
    return limits


def _in_range(value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ValueError(f"{value} is out of range; must be {low}..{high}")
    return value


class _Body(BaseModel):
    """The fields both endpoints take: OpenAI's images API plus steps, guidance and seed."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    prompt: str
    model: str | None = None
    size: str | None = None  # WIDTHxHEIGHT; default per endpoint
    steps: int | None = None  # default: the server's
    guidance: float | None = Field(default=None, allow_inf_nan=False)
    guidance_scale: float | None = Field(default=None, allow_inf_nan=False)  # diffusers' name for it
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    response_format: Literal["b64_json", "url"] = "b64_json"

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, prompt: str, info: ValidationInfo) -> str:
        limit = _limits(info).max_prompt_chars
        if not prompt.strip():
            raise ValueError("must be a non-empty string")
        if len(prompt) > limit:
            raise ValueError(f"{len(prompt)} characters; the limit is {limit}")
        try:  # a lone surrogate (JSON's "\ud800") is valid JSON but no text: the tokenizer fails the batch
            prompt.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"not valid Unicode text (a lone surrogate at {err.start})") from None
        return prompt

    @field_validator("size")
    @classmethod
    def _size(cls, size: str | None, info: ValidationInfo) -> str | None:
        if size is not None:
            _parse_size(size, _limits(info))
        return size

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: int | None, info: ValidationInfo) -> int | None:
        return None if steps is None else _in_range(steps, 1, _limits(info).max_steps)

    @field_validator("guidance", "guidance_scale")
    @classmethod
    def _guidance(cls, value: float | None, info: ValidationInfo) -> float | None:
        high = _limits(info).max_guidance
        if value is not None and not 0.0 <= value <= high:
            raise ValueError(f"{value} is out of range; must be 0..{high:g}")
        return value

    def guidance_or(self, default: float) -> float:
        chosen = self.guidance if self.guidance is not None else self.guidance_scale
        return default if chosen is None else chosen


class ImageBody(_Body):
    """``POST /v1/images/generations``."""

    n: int = 1  # images

    @field_validator("n")
    @classmethod
    def _n(cls, n: int, info: ValidationInfo) -> int:
        return _in_range(n, 1, _limits(info).max_n)


class VideoBody(_Body):
    """``POST /v1/videos/generations``."""

    num_frames: int | None = None  # default: 4 x frame_multiple + 1
    fps: int = 16
    format: str | None = None  # container; default: the first the server can write

    @field_validator("num_frames")
    @classmethod
    def _frames(cls, frames: int | None, info: ValidationInfo) -> int | None:
        if frames is None:
            return None
        limits = _limits(info)
        _in_range(frames, 1, limits.max_frames)
        if (frames - 1) % limits.frame_multiple:
            raise ValueError(
                f"{frames} is not {limits.frame_multiple}k+1 (e.g. 9, 17, ... {limits.max_frames})"
            )
        return frames

    @field_validator("fps")
    @classmethod
    def _fps(cls, fps: int, info: ValidationInfo) -> int:
        return _in_range(fps, 1, _limits(info).max_fps)

    @field_validator("format")
    @classmethod
    def _format(cls, container: str | None, info: ValidationInfo) -> str | None:
        formats: tuple[str, ...] = (info.context or {}).get("formats", ())
        if container is not None and formats and container not in formats:
            raise ValueError(f"{container!r} is not one of {', '.join(formats)}")
        return container


_B = TypeVar("_B", bound=_Body)


def _validate(model: type[_B], body: Any, context: dict[str, Any]) -> _B:
    """``body`` as ``model``, or :class:`InvalidRequest` naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    try:
        return model.model_validate(body, context=context)
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "body"
        raise InvalidRequest(field, first["msg"].removeprefix("Value error, ")) from None


def _parse_size(size: str, limits: Limits) -> tuple[int, int]:
    rule = (
        f"'WIDTHxHEIGHT' with each side a multiple of {limits.size_multiple} "
        f"from {limits.min_side_px} to {limits.max_side_px} px"
    )
    match = _SIZE.match(size)
    if match is None:
        raise ValueError(f"{size!r} is not {rule}")
    width, height = int(match.group(1)), int(match.group(2))
    for side in (width, height):
        if not limits.min_side_px <= side <= limits.max_side_px or side % limits.size_multiple:
            raise ValueError(f"{size!r} is not allowed; must be {rule}")
    return width, height


def _model(asked: str | None, kind: str, served: str | None) -> str:
    if served is None:
        raise InvalidRequest("model", f"no {kind} model is served here", status=404)
    if asked is not None and asked != served:
        raise InvalidRequest("model", f"{asked!r} is not served; the {kind} model is {served!r}", status=404)
    return served


def parse_image(body: Any, served: str | None, limits: Limits, default_steps: int = 20) -> JobSpec:
    """Validate a ``POST /v1/images/generations`` body (OpenAI shape + steps, guidance, seed)."""
    req = _validate(ImageBody, body, {"limits": limits})
    width, height = _parse_size(req.size or "512x512", limits)
    model = _model(req.model, "image", served)
    steps = req.steps or default_steps
    shape = Shape("image", model, width, height, 1, steps, req.guidance_or(7.5))
    return JobSpec(shape, req.prompt, req.n, req.seed, req.response_format)


def parse_video(
    body: Any,
    served: str | None,
    limits: Limits,
    default_steps: int = 20,
    video_formats: tuple[str, ...] = (),
) -> JobSpec:
    """Validate a ``POST /v1/videos/generations`` body (prompt, size, num_frames, fps, steps, seed)."""
    formats = video_formats or ("mp4", "gif")
    req = _validate(VideoBody, body, {"limits": limits, "formats": formats})
    width, height = _parse_size(req.size or "832x480", limits)
    frames = req.num_frames or 1 + 4 * limits.frame_multiple
    model = _model(req.model, "video", served)
    steps = req.steps or default_steps
    shape = Shape("video", model, width, height, frames, steps, req.guidance_or(5.0))
    container = req.format or formats[0]
    return JobSpec(shape, req.prompt, 1, req.seed, req.response_format, fps=req.fps, container=container)
