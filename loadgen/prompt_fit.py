"""Prompt lengths as the server counts them: fit each prompt to its drawn target with ``/tokenize``.

The study defines its tasks by token lengths, counted by the served model's tokenizer
*after* its chat template. Words-per-token calibration alone misses that by the template
(tens of tokens per request on a small model) and by word-level rounding. So, before
anything is sent, every request that has a :class:`~loadgen.records.PromptSlot` is
counted exactly as the server will count it - vLLM's ``POST /tokenize`` with the same
``messages`` (chat template and generation prompt applied) or the same ``prompt``
(completions, special tokens as the completions API adds them) - and its slot grows or
shrinks by words until the count is the target:

- too short by ``d``: add ``round(d / tokens_per_word)`` words (at least one), short
  filler words when ``d`` is small;
- too long by ``d``: drop ``round(d / tokens_per_word)`` words from the slot's end (at
  least one, never below one word per part of the prompt);
- at most :data:`MAX_ROUNDS` counts per request; the closest count wins (ties: the
  shorter prompt).

A target below what the fixed parts already take (the template, GPQA's choices) cannot
be reached: the request keeps its shortest prompt and is counted as *floored*.
Multimodal requests are not fitted (the server adds vision tokens the text cannot
change) and datasets' rows are sent as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from loadgen.bounded import gather_bounded
from loadgen.prompts import CODE_WORDS, WORDS
from loadgen.records import Request

__all__ = ["MAX_ROUNDS", "FitStats", "fit_prompts", "tokenize_body"]

MAX_ROUNDS = 12
_FILLER = ("the", "of", "and", "to", "in", "is", "it", "on", "as", "at", "by", "we")
_CODE_FILLER = ("x", "=", "1", "+", "(", ")", ":", ",", "if", "in", "0", "def")


@dataclass
class FitStats:
    """What the fitter did: requests fitted, exact, floored (target unreachable), failed."""

    fitted: int = 0
    exact: int = 0
    floored: int = 0
    failed: int = 0
    counts: int = 0  # /tokenize calls

    def to_json(self) -> dict[str, int]:
        return {
            "fitted": self.fitted,
            "exact": self.exact,
            "floored": self.floored,
            "failed": self.failed,
            "tokenize_calls": self.counts,
        }


def tokenize_body(req: Request, model: str) -> dict[str, Any]:
    """The ``/tokenize`` body that counts ``req``'s prompt as its endpoint will."""
    if req.api == "completions":
        return {"model": model, "prompt": req.body["prompt"], "add_special_tokens": True}
    return {"model": model, "messages": req.body["messages"], "add_generation_prompt": True}


async def _count(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> int | None:
    try:
        async with session.post(
            f"{url}/tokenize", json=body, timeout=aiohttp.ClientTimeout(total=10)
        ) as resp:
            if resp.status >= 400:
                return None
            data = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError, OSError):
        return None
    count = data.get("count") if isinstance(data, dict) else None
    return count if isinstance(count, int) and count > 0 else None


def _step(words: list[str], d: int, tpw: float, code: bool, k: int, min_words: int) -> list[str]:
    """The slot's words after one step towards the target (``d`` = target - count)."""
    n = max(1, round(abs(d) / tpw))
    if d > 0:
        pool = (_CODE_FILLER if code else _FILLER) if d <= 3 else (CODE_WORDS if code else WORDS)
        return words + [pool[(k + i) % len(pool)] for i in range(n)]
    return words[: max(min_words, len(words) - n)]


async def _fit_one(
    session: aiohttp.ClientSession, url: str, model: str, req: Request, tpw: float, stats: FitStats
) -> None:
    slot, target = req.slot, req.target_prompt_tokens
    assert slot is not None and target is not None
    words = list(slot.words)
    best: tuple[int, int, list[str]] | None = None  # (|d|, count, words)
    for k in range(MAX_ROUNDS):
        slot.render(words)
        count = await _count(session, url, tokenize_body(req, model))
        stats.counts += 1
        if count is None:
            break
        d = target - count
        if best is None or (abs(d), count) < best[:2]:
            best = (abs(d), count, list(words))
        if d == 0 or (d < 0 and len(words) <= slot.min_words):
            break
        words = _step(words, d, tpw, slot.code, k, slot.min_words)
    if best is None:
        stats.failed += 1
        slot.render(slot.words)
        return
    slot.words = best[2]
    slot.render(slot.words)
    stats.fitted += 1
    stats.exact += best[0] == 0
    stats.floored += best[1] > target and len(best[2]) <= slot.min_words


async def fit_prompts(
    session: aiohttp.ClientSession,
    url: str,
    model: str,
    requests: Sequence[Request],
    tokens_per_word: float = 1.0,
    parallel: int = 8,
) -> FitStats:
    """Fit every request with a slot and a target (see the module docstring); returns the tally."""
    stats = FitStats()
    tpw = max(0.25, tokens_per_word)
    todo = [r for r in requests if r.slot is not None and r.target_prompt_tokens is not None]
    await gather_bounded(lambda req: _fit_one(session, url, model, req, tpw, stats), todo, parallel)
    return stats
