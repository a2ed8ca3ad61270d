"""The HTTP client: one coroutine per request, streaming where the API streams.

Chat and completions requests stream (SSE), diffusion requests are plain JSON; the answer is
read and checked by :mod:`loadgen.answers`. Every request sends ``X-Request-Id`` and a W3C
``traceparent``.

A failing request never stops the run: HTTP errors, broken streams, answers that cannot be
right, answers over :data:`MAX_ANSWER_BYTES` and timeouts are written into its
:class:`~loadgen.records.Result` (``error``), which the analysis counts and excludes from
energy figures; so is anything else one answer makes go wrong. An error page is read up to
:data:`ERROR_BYTES`.

Also here: the pre-flight check (is the server there, what does it serve, how
long is its context) and the tokenizer calibration through ``POST /tokenize``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import aiohttp

from loadgen.answers import BadAnswer, read_json, read_stream
from loadgen.errors import UnreachableError
from loadgen.prompts import calibration_text
from loadgen.records import Result
from loadgen.tracing import ClientTracer

__all__ = [
    "ERROR_BYTES",
    "MAX_ANSWER_BYTES",
    "ServerInfo",
    "calibrate_tokens_per_word",
    "probe_server",
    "send",
]

MAX_ANSWER_BYTES = 256 << 20  # a plain JSON answer (images, videos as base64) read at most
ERROR_BYTES = 4096  # of an error page, read (300 characters kept)


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
                text = (await resp.content.read(ERROR_BYTES)).decode(errors="replace")
                raise UnreachableError(
                    f"{url} answered GET /v1/models with HTTP {resp.status}: {text[:200]} ({flag})"
                )
            data = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        raise UnreachableError(
            f"cannot reach {url} ({type(err).__name__}: {err}); is the server running? Set it with {flag}"
        ) from err
    except ValueError as err:  # not JSON
        raise UnreachableError(
            f"{url} answered GET /v1/models with no JSON: {str(err)[:100]} ({flag})"
        ) from err
    listed = data.get("data", []) if isinstance(data, dict) else None
    if not isinstance(listed, list):
        raise UnreachableError(f"{url} answered GET /v1/models without a list of models in data ({flag})")
    models = tuple(str(m.get("id"))[:200] for m in listed if isinstance(m, dict))
    lens = [m.get("max_model_len") for m in listed if isinstance(m, dict)]
    max_len = next((x for x in lens if isinstance(x, int) and not isinstance(x, bool) and x > 0), None)
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
            text = (await resp.content.read(ERROR_BYTES)).decode(errors="replace")
            result.error = f"HTTP {resp.status}: {text[:300]}"
            return
        if result.request.body.get("stream"):
            await read_stream(resp, result, t0)
        else:
            data = json.loads(await _capped(resp, MAX_ANSWER_BYTES))
            read_json(data, result, time.perf_counter() - t0)
        result.finished_s = time.perf_counter() - t0


async def _capped(resp: aiohttp.ClientResponse, most_bytes: int) -> bytes:
    """The whole body, or :class:`BadAnswer` once it is over ``most_bytes``."""
    parts, size = [], 0
    async for piece in resp.content.iter_chunked(1 << 16):
        size += len(piece)
        if size > most_bytes:
            raise BadAnswer(f"the answer is over {most_bytes >> 20} MiB")
        parts.append(piece)
    return b"".join(parts)


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
    except asyncio.CancelledError:
        result.error = "cancelled"
        raise
    except Exception as err:  # a broken connection or answer, or anything else one answer makes go wrong
        result.error = f"{type(err).__name__}: {str(err)[:300]}"
    finally:
        tracer.end(span, result)
    return result
