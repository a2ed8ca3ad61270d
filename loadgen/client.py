"""The HTTP client: one coroutine per request, streaming where the API streams.

Chat and completions requests stream (SSE); each ``data:`` chunk that carries text
is timed, which gives TTFT, inter-token latencies and the tokens generated in any
time window. The final usage chunk (``stream_options.include_usage``) gives the
exact ``completion_tokens`` and ``prompt_tokens``. Diffusion requests are plain
JSON. Every request sends ``X-Request-Id`` and a W3C ``traceparent``.

A failing request never stops the run: HTTP errors, broken streams and timeouts
are written into its :class:`~loadgen.records.Result` (``error``), which the
analysis counts and excludes from energy figures.

Also here: the pre-flight check (is the server there, what does it serve, how
long is its context) and the tokenizer calibration through ``POST /tokenize``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from loadgen.errors import UnreachableError
from loadgen.prompts import calibration_text
from loadgen.records import Result
from loadgen.tracing import ClientTracer

__all__ = ["ServerInfo", "calibrate_tokens_per_word", "probe_server", "send"]


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the pre-flight check learned: served model ids and the context length (tokens)."""

    url: str
    models: tuple[str, ...]
    max_model_len: int | None


async def probe_server(
    session: aiohttp.ClientSession, url: str, flag: str, timeout_s: float = 5.0
) -> ServerInfo:
    """``GET {url}/v1/models``; raises :class:`UnreachableError` naming ``url`` and ``flag`` when it fails."""
    try:
        async with session.get(f"{url}/v1/models", timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status == 404:
                return ServerInfo(url, (), None)  # reachable, just no model list (e.g. a diffusion server)
            if resp.status >= 400:
                text = await resp.text()
                raise UnreachableError(
                    f"{url} answered GET /v1/models with HTTP {resp.status}: {text[:200]} ({flag})"
                )
            data = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        raise UnreachableError(
            f"cannot reach {url} ({type(err).__name__}: {err}); is the server running? Set it with {flag}"
        ) from err
    models = tuple(str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict))
    lens = [m.get("max_model_len") for m in data.get("data", []) if isinstance(m, dict)]
    max_len = next((int(x) for x in lens if isinstance(x, int)), None)
    return ServerInfo(url, models, max_len)


async def calibrate_tokens_per_word(session: aiohttp.ClientSession, url: str, model: str) -> float | None:
    """Tokens per word of the prompt word pool via the server's ``POST /tokenize``; ``None`` without one."""
    text = calibration_text()
    try:
        async with session.post(
            f"{url}/tokenize",
            json={"model": model, "prompt": text, "add_special_tokens": False},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as resp:
            if resp.status >= 400:
                return None
            data = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    count = data.get("count") if isinstance(data, dict) else None
    if not isinstance(count, int) or count <= 0:
        return None
    return count / len(text.split())


def _chunk_text(choice: dict[str, Any]) -> str:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return str(delta.get("content") or "") + str(
            delta.get("reasoning_content") or delta.get("reasoning") or ""
        )
    return str(choice.get("text") or "")


async def _read_stream(resp: aiohttp.ClientResponse, result: Result, t0: float) -> None:
    first_choice_s: float | None = None
    usage: dict[str, Any] | None = None
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            break
        now = time.perf_counter() - t0
        chunk = json.loads(payload)
        if result.response_id is None and isinstance(chunk.get("id"), str):
            result.response_id = chunk["id"]
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if first_choice_s is None:
                first_choice_s = now
            if choice.get("finish_reason"):
                result.finish_reason = str(choice["finish_reason"])
            if _chunk_text(choice):
                if result.first_token_s is None:
                    result.first_token_s = now
                result.chunk_s.append(now)
                result.chunk_tokens.append(1.0)
    if result.first_token_s is None:
        result.first_token_s = first_choice_s
    counted = len(result.chunk_s)
    if usage is not None:
        result.output_tokens = int(usage.get("completion_tokens") or 0)
        result.prompt_tokens = int(usage["prompt_tokens"]) if usage.get("prompt_tokens") is not None else None
        if counted and result.output_tokens != counted:
            per = result.output_tokens / counted
            result.chunk_tokens = [per] * counted
    else:
        result.output_tokens = counted
    result.output_units = float(result.output_tokens)


def _read_json(data: dict[str, Any], result: Result, now: float) -> None:
    result.response_id = str(data["id"]) if isinstance(data.get("id"), str) else None
    usage = data.get("usage") or {}
    if "choices" in data:  # a non-streamed LLM answer
        result.output_tokens = int(usage.get("completion_tokens") or 0)
        result.prompt_tokens = usage.get("prompt_tokens")
        result.output_units = float(result.output_tokens)
        result.first_token_s = now
        result.chunk_s = [now]
        result.chunk_tokens = [float(result.output_tokens)]
    else:  # images / videos: one unit per item in "data"
        items = data.get("data")
        result.output_units = float(len(items)) if isinstance(items, list) else 1.0
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
    if not isinstance(start, int | float) or not isinstance(end, int | float) or not 0 < start <= end:
        return None
    return {"id": raw["id"], "size": size, "start_unix_s": float(start), "end_unix_s": float(end)}


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: str,
    headers: dict[str, str],
    result: Result,
    t0: float,
    timeout_s: float,
) -> None:
    async with session.post(
        url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as resp:
        result.status = resp.status
        if resp.status >= 400:
            text = await resp.text()
            result.error = f"HTTP {resp.status}: {text[:300]}"
            return
        if result.request.body.get("stream"):
            await _read_stream(resp, result, t0)
        else:
            data = await resp.json(content_type=None)
            _read_json(data, result, time.perf_counter() - t0)
        result.finished_s = time.perf_counter() - t0


async def send(
    session: aiohttp.ClientSession,
    base_url: str,
    result: Result,
    t0: float,
    tracer: ClientTracer,
    timeout_s: float,
) -> Result:
    """Send ``result.request`` and fill ``result`` in place (never raises for request failures)."""
    req = result.request
    headers = {"X-Request-Id": req.id, "Content-Type": "application/json"}
    span = tracer.start(req, headers)
    result.trace_id = format(span.get_span_context().trace_id, "032x")
    body = json.dumps(req.body)
    result.sent_s = time.perf_counter() - t0
    try:
        for attempt in (0, 1):
            try:
                await _post(session, base_url + req.path, body, headers, result, t0, timeout_s)
                break
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # a kept-alive connection the server closed just before we reused it: nothing was
                # answered, so sending again is safe (once; counted in ``retries``)
                if attempt or result.status is not None or result.chunk_s:
                    raise
                result.retries += 1
    except TimeoutError:
        result.error = f"timeout after {timeout_s:g} s"
    except (aiohttp.ClientError, OSError, ValueError) as err:
        result.error = f"{type(err).__name__}: {err}"
    except asyncio.CancelledError:
        result.error = "cancelled"
        raise
    finally:
        tracer.end(span, result)
    return result
