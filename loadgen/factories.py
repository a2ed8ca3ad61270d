"""Request factories: a task spec + a seeded generator -> :class:`~loadgen.records.Request` s.

Per task:

- Text Conversation (``lm-arena-chat``): a multi-turn history; the drawn prompt
  length is split over ``2k-1`` alternating user/assistant messages, ``k = 1 +
  min(4, L // 250)`` turns (first turns short, later ones carry history).
- Problem Solving (``gpqa``): one question and four choices.
- Code Completion (``sourcegraph-fim``): a prefix and suffix wrapped in the FIM
  template (``--fim-template``, default Qwen/StarCoder tokens), sent to
  ``/v1/completions``.
- Image Chat / Video Chat: short text plus a generated JPEG / 32-frame clip
  (:mod:`loadgen.media`), as ``image_url`` / ``video_url`` parts.
- Text to Image / Text to Video: the study's resolution, steps and frames.

Output lengths are enforced with ``max_tokens`` = the drawn length and
``ignore_eos`` (a vLLM extension; ``--no-ignore-eos`` lets outputs end naturally,
as the study did). With a context limit the drawn length is clipped to what fits
after the prompt.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadgen.media import data_url, jpeg_image, video_clip
from loadgen.prompts import PromptBuilder
from loadgen.records import PromptSlot, Request
from loadgen.tasks import TaskSpec

__all__ = ["DEFAULT_FIM_TEMPLATE", "FactoryOptions", "base_body", "diffusion_body", "make_requests"]

DEFAULT_FIM_TEMPLATE = "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"
_CUT_GRID = 8  # words: see _shared_slot
_MEDIA_VARIANTS = 4  # distinct generated images/clips per run (generation costs CPU, not the point)


@dataclass(frozen=True, slots=True)
class FactoryOptions:
    """How requests are shaped; temperatures and top_p are the study's sampling settings."""

    model: str
    max_model_len: int | None = None
    ignore_eos: bool = True
    stream: bool = True
    temperature: float = 0.8
    top_p: float = 0.95
    fim_template: str = DEFAULT_FIM_TEMPLATE
    diffusion_model: str = ""  # the model name sent to the diffusion server ('' = the task's)
    template_margin_tokens: int = 32  # room left for the chat template when clipping to the context


def base_body(api: str, opts: FactoryOptions, max_tokens: int) -> dict[str, Any]:
    """The common body of an LLM request (sampling, length enforcement, streaming with usage)."""
    body: dict[str, Any] = {
        "model": opts.model,
        "max_tokens": int(max_tokens),
        "temperature": opts.temperature,
        "top_p": opts.top_p,
    }
    if opts.ignore_eos:
        body["ignore_eos"] = True
    if opts.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _clip_output(drawn: int, prompt_tokens: int, opts: FactoryOptions) -> int:
    if opts.max_model_len is None:
        return drawn
    room = opts.max_model_len - prompt_tokens - opts.template_margin_tokens
    return max(1, min(drawn, room))


def _shared_slot(
    parts: list[list[str]], write: Callable[[list[str]], None], code: bool = False
) -> PromptSlot:
    """One slot over several text parts: the fitter's words are re-split in the parts' proportions.

    So trimming or growing a prompt changes every part a little (each keeps at least one
    word), and no part's fixed size can keep the prompt above its target.
    """
    sizes = np.asarray([len(p) for p in parts], dtype=np.float64)
    shares = sizes / sizes.sum() if sizes.sum() > 0 else np.full(len(parts), 1 / len(parts))

    def render(words: list[str]) -> None:
        n = max(len(words), len(parts))
        # cut on a coarse grid of the length, so a step of a word or two only moves the last part
        grid = n if n < 4 * _CUT_GRID else n - n % _CUT_GRID
        cuts = np.floor(np.cumsum(shares)[:-1] * grid).astype(int)
        bounds = [0, *[int(c) for c in cuts], n]
        chunks = [words[a:b] or words[-1:] for a, b in itertools.pairwise(bounds)]
        write([PromptBuilder.join(c, code) for c in chunks])

    return PromptSlot([w for p in parts for w in p], render, code, min_words=len(parts))


def _history(builder: PromptBuilder, tokens: int) -> tuple[list[dict[str, Any]], PromptSlot]:
    """Alternating turns; all turns share the slot the length fitter adjusts."""
    turns = 1 + min(4, tokens // 250)
    parts = [builder.words(n) for n in builder.split(tokens, 2 * turns - 1)]
    messages: list[dict[str, Any]] = [
        {"role": "user" if i % 2 == 0 else "assistant"} for i in range(len(parts))
    ]

    def write(texts: list[str]) -> None:
        for m, text in zip(messages, texts, strict=True):
            m["content"] = text

    slot = _shared_slot(parts, write)
    slot.render(slot.words)
    return messages, slot


def _question(builder: PromptBuilder, tokens: int) -> tuple[list[dict[str, Any]], PromptSlot]:
    """A question and four choices, sharing one slot."""
    parts = [builder.words(n) for n in builder.split(tokens, 5)]
    message: dict[str, Any] = {"role": "user"}

    def write(texts: list[str]) -> None:
        lines = [texts[0] + "?", *(f"({letter}) {t}" for letter, t in zip("ABCD", texts[1:], strict=False))]
        lines.append("Think step by step; answer A, B, C or D.")
        message["content"] = "\n".join(lines)

    slot = _shared_slot(parts, write)
    slot.render(slot.words)
    return [message], slot


class _Media:
    """Generated JPEGs and clips, a few variants each, made on first use."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int], str] = {}

    def image(self, variant: int, side_px: int) -> str:
        key = ("image", variant, side_px)
        if key not in self._cache:
            self._cache[key] = data_url(jpeg_image(variant, side_px), "image/jpeg")
        return self._cache[key]

    def video(self, variant: int, side_px: int, frames: int) -> str:
        key = ("video", variant, side_px * 1000 + frames)
        if key not in self._cache:
            self._cache[key] = data_url(video_clip(variant, side_px, frames), "video/x-msvideo")
        return self._cache[key]


def _llm_request(
    spec: TaskSpec,
    rid: str,
    rng: np.random.Generator,
    builder: PromptBuilder,
    opts: FactoryOptions,
    media: _Media,
) -> Request:
    assert spec.output is not None and spec.prompt is not None
    prompt_tokens = int(spec.prompt.sample(rng, 1)[0])
    drawn = int(spec.output.sample(rng, 1)[0])
    media_tokens = 0
    slot: PromptSlot | None = None
    if spec.api == "completions":
        pre, suf = builder.split(prompt_tokens, 2) if prompt_tokens > 1 else (1, 1)
        max_tokens = _clip_output(drawn, prompt_tokens, opts)
        body = base_body("completions", opts, max_tokens)

        def write(texts: list[str]) -> None:
            body["prompt"] = opts.fim_template.format(prefix=texts[0], suffix=texts[1])

        slot = _shared_slot([builder.words(pre, code=True), builder.words(suf, code=True)], write, code=True)
        slot.render(slot.words)
    else:
        if spec.id == "gpqa":
            messages, slot = _question(builder, prompt_tokens)
        elif spec.multimodal:
            variant = int(rng.integers(0, _MEDIA_VARIANTS))
            if spec.video_frames:
                part = {
                    "type": "video_url",
                    "video_url": {"url": media.video(variant, spec.media_side_px, spec.video_frames)},
                }
            else:
                part = {"type": "image_url", "image_url": {"url": media.image(variant, spec.media_side_px)}}
            messages = [
                {"role": "user", "content": [{"type": "text", "text": builder.text(prompt_tokens)}, part]}
            ]
            media_tokens = 64  # unknown vision-token count; keep a margin when clipping to the context
        else:
            messages, slot = _history(builder, prompt_tokens)
        max_tokens = _clip_output(drawn, prompt_tokens + media_tokens, opts)
        body = base_body("chat", opts, max_tokens) | {"messages": messages}
    return Request(
        id=rid,
        task=spec.id,
        api=spec.api,
        path=spec.path,
        body=body,
        unit="token",
        target_output_tokens=max_tokens,
        target_prompt_tokens=prompt_tokens,
        slot=slot,
    )


def diffusion_body(
    spec: TaskSpec,
    prompt: str,
    opts: FactoryOptions,
    rng: np.random.Generator,
    row: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of an images/videos request: the study's size, steps (and frames, fps), a seed.

    ``model`` is only sent when ``--diffusion-model`` names one (the server serves one model
    per kind and refuses another name); ``row`` (a dataset line) overrides any field.
    """
    row = row or {}
    body: dict[str, Any] = {
        "prompt": prompt,
        "n": 1,
        "size": str(row.get("size", f"{spec.width}x{spec.height}")),
        "steps": int(row.get("steps", spec.steps)),
        "seed": int(row.get("seed", int(rng.integers(0, 2**31 - 1)))),
    }
    if opts.diffusion_model:
        body["model"] = opts.diffusion_model
    if spec.api == "videos":
        body |= {
            "num_frames": int(row.get("num_frames", spec.num_frames)),
            "fps": int(row.get("fps", spec.fps)),
        }
    else:
        body["response_format"] = "b64_json"
    return body


def _diffusion_request(
    spec: TaskSpec, rid: str, rng: np.random.Generator, builder: PromptBuilder, opts: FactoryOptions
) -> Request:
    body = diffusion_body(spec, builder.text(int(rng.integers(12, 48))), opts, rng)
    return Request(id=rid, task=spec.id, api=spec.api, path=spec.path, body=body, unit=spec.unit, units=1.0)


def make_requests(
    spec: TaskSpec,
    n: int,
    rng: np.random.Generator,
    builder: PromptBuilder,
    opts: FactoryOptions,
    id_prefix: str,
    start: int = 0,
) -> list[Request]:
    """``n`` requests of ``spec``, ids ``{id_prefix}-{index:06d}`` from ``start``."""
    media = _Media()
    out: list[Request] = []
    for i in range(start, start + n):
        rid = f"{id_prefix}-{i:06d}"
        if spec.diffusion:
            out.append(_diffusion_request(spec, rid, rng, builder, opts))
        else:
            out.append(_llm_request(spec, rid, rng, builder, opts, media))
    return out
