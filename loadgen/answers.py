"""A server's answer read into a :class:`~loadgen.records.Result`, every field checked.

Chat and completions requests stream (SSE); each ``data:`` chunk that carries text is timed,
which gives TTFT, inter-token latencies and the tokens generated in any time window. The final
usage chunk (``stream_options.include_usage``) gives the exact ``completion_tokens`` and
``prompt_tokens``. Diffusion requests are plain JSON, one unit per item in ``data``.

The answer is the server's, so any field may be missing, the wrong type, NaN, negative or
absurd. An answer that cannot be right raises :class:`BadAnswer` (a ``ValueError``: the request
is then a counted failure, kept out of the energy figures, and the run goes on): a chunk that is
not a JSON object, or carries an ``error``; a stream that ends before any ``finish_reason`` or
``[DONE]`` (a cut stream, or a 200 with an HTML page); a token count that is not a whole number
>= 0, or more than the request allowed (``max_tokens`` x ``n``); a diffusion answer without
items, or with more than were asked for.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import aiohttp

from loadgen.records import Result

__all__ = ["BadAnswer", "read_json", "read_stream"]

MAX_TOKENS = 10**8  # the most tokens an answer may count when the request set no max_tokens


class BadAnswer(ValueError):
    """An answer that cannot be right; the message says what was wrong."""


def count(value: Any, name: str, most: int = MAX_TOKENS) -> int | None:
    """A token count from the answer: None if absent; a whole number in 0..``most`` or BadAnswer."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= most:
        raise BadAnswer(f"{name}: {str(value)[:40]!r} is not a token count in 0..{most}")
    return value


def _allowed(body: dict[str, Any]) -> int:
    """The most output tokens a request may get: its ``max_tokens`` times ``n`` (parallel samples)."""
    most = body.get("max_tokens") or body.get("max_completion_tokens")
    n = body.get("n") or 1
    if isinstance(most, int) and isinstance(n, int) and most > 0 and n > 0:
        return min(most * n, MAX_TOKENS)
    return MAX_TOKENS


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadAnswer(f"{what} is not a JSON object: {str(value)[:80]!r}")
    if "error" in value:
        raise BadAnswer(f"{what} carries an error: {str(value['error'])[:200]}")
    return value


def _choices(chunk: dict[str, Any]) -> list[dict[str, Any]]:
    choices = chunk.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise BadAnswer(f"choices is not a list of objects: {str(choices)[:80]!r}")
    return choices


def _chunk_text(choice: dict[str, Any]) -> str:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return str(delta.get("content") or "") + str(
            delta.get("reasoning_content") or delta.get("reasoning") or ""
        )
    return str(choice.get("text") or "")


async def read_stream(resp: aiohttp.ClientResponse, result: Result, t0: float) -> None:
    """Read an SSE answer into ``result`` (raises :class:`BadAnswer`, see the module docstring)."""
    first_choice_s: float | None = None
    usage: dict[str, Any] | None = None
    done = False
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            done = True
            break
        now = time.perf_counter() - t0
        chunk = _object(json.loads(payload), "a stream chunk")
        if result.response_id is None and isinstance(chunk.get("id"), str):
            result.response_id = chunk["id"][:200]
        if chunk.get("usage"):
            usage = _object(chunk["usage"], "usage")
        for choice in _choices(chunk):
            if first_choice_s is None:
                first_choice_s = now
            if choice.get("finish_reason"):
                result.finish_reason = str(choice["finish_reason"])[:40]
            if _chunk_text(choice):
                if result.first_token_s is None:
                    result.first_token_s = now
                result.chunk_s.append(now)
                result.chunk_tokens.append(1.0)
    if not done and result.finish_reason is None:
        raise BadAnswer(f"the stream ended before a finish_reason or [DONE] ({len(result.chunk_s)} chunks)")
    if result.first_token_s is None:
        result.first_token_s = first_choice_s
    _take_usage(result, usage)


def _usage_counts(usage: dict[str, Any], body: dict[str, Any]) -> tuple[int | None, int | None]:
    """A usage's ``(completion_tokens, prompt_tokens)``, each checked (None where absent)."""
    completion = count(usage.get("completion_tokens"), "usage.completion_tokens", _allowed(body))
    return completion, count(usage.get("prompt_tokens"), "usage.prompt_tokens")


def _take_usage(result: Result, usage: dict[str, Any] | None) -> None:
    """The usage's token counts (checked), the chunks' tokens rescaled to them; the chunks counted
    where the answer has no ``completion_tokens``."""
    counted = len(result.chunk_s)
    completion, prompt = _usage_counts(usage, result.request.body) if usage is not None else (None, None)
    result.output_tokens = counted if completion is None else completion
    result.prompt_tokens = prompt
    if counted and result.output_tokens != counted:
        per = result.output_tokens / counted
        result.chunk_tokens = [per] * counted
    result.output_units = float(result.output_tokens)


def read_json(data: Any, result: Result, now: float) -> None:
    """Read a plain JSON answer (a non-streamed LLM answer, or images / videos) into ``result``."""
    data = _object(data, "the answer")
    result.response_id = str(data["id"])[:200] if isinstance(data.get("id"), str) else None
    if "choices" in data:  # a non-streamed LLM answer
        _choices(data)
        completion, result.prompt_tokens = _usage_counts(
            _object(data.get("usage") or {}, "usage"), result.request.body
        )
        result.output_tokens = completion or 0
        result.output_units = float(result.output_tokens)
        result.first_token_s = now
        result.chunk_s = [now]
        result.chunk_tokens = [float(result.output_tokens)]
        return
    items = data.get("data")  # images / videos: one unit per item
    if not isinstance(items, list) or not items:
        raise BadAnswer(f"the answer has no items in data: {str(items)[:80]!r}")
    asked = result.request.units
    if asked > 0 and len(items) > asked:
        raise BadAnswer(f"the answer has {len(items)} items for {asked:g} asked")
    result.output_units = float(len(items))
    result.batch = _batch(data.get("batch"))
    result.served_model = str(data["model"])[:200] if isinstance(data.get("model"), str) else None


def _batch(raw: Any) -> dict[str, Any] | None:
    """The diffusion server's ``batch`` (id, size, pipeline-call start/end in Unix s), if well formed."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        return None
    size, start, end = raw.get("size"), raw.get("start_unix_s"), raw.get("end_unix_s")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        return None
    if isinstance(start, bool) or isinstance(end, bool):
        return None
    if (
        not isinstance(start, int | float)
        or not isinstance(end, int | float)
        or not 0 < start <= end < math.inf
    ):
        return None
    return {"id": raw["id"], "size": size, "start_unix_s": float(start), "end_unix_s": float(end)}
