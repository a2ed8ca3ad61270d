"""The HTTP API (FastAPI): images, videos, health, metrics.

    POST /v1/images/generations   OpenAI images shape (prompt, n, size, response_format) + steps,
                                  guidance, seed, model
    POST /v1/videos/generations   prompt, size, num_frames, fps, steps, guidance, seed, format (mp4|gif),
                                  response_format (b64_json | url: a file:// URL under --output-dir)
    GET  /health                  models, queue depth
    GET  /metrics                 the server's own counters (Prometheus text)

Every response of a request that ran carries ``id`` (the request id the
sidecar's ``/v1/requests/{id}`` knows) and ``batch``: its id, size (items) and the
pipeline call's start and end (``start_unix_s``, ``end_unix_s``), so a client can time
each batch as the study does (the sidecar's ``/v1/energy`` over that interval). Errors
use the OpenAI shape ``{"error": {"message", "type", "param", "code"}}``:
400/404 for bad input (naming the field and the limit), 429 with Retry-After
when the queue is full, 500 when the request's batch failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from servers.diffusion.batcher import Batch, Batcher, Job, QueueFull
from servers.diffusion.encode import MIME, b64, encode_image, encode_video, video_formats
from servers.diffusion.metrics import ServerMetrics
from servers.diffusion.shapes import InvalidRequest, JobSpec, Limits, parse_image, parse_video
from servers.diffusion.tracing import Tracing

__all__ = ["Runner", "ServerSettings", "make_app"]

log = logging.getLogger(__name__)

_PREFIX = {"image": "img", "video": "vid"}  # request ids: img-<uuid hex>, vid-<uuid hex>


class Runner(Protocol):
    """Runs one batch as one pipeline call; ``models`` maps kind -> served model name."""

    @property
    def models(self) -> dict[str, str]: ...

    def __call__(self, batch: Batch) -> Sequence[Any]: ...


@dataclass(frozen=True)
class ServerSettings:
    """Batching and limits; times in seconds unless the name says ms."""

    limits: Limits = field(default_factory=Limits)
    max_batch_size: int = 8  # items per pipeline call
    max_wait_ms: float = 50.0  # how long the oldest request waits for company
    max_queue_items: int = 64
    default_steps: int = 20
    output_dir: Path | None = None  # where response_format=url writes files
    disconnect_poll_s: float = 0.05


def _error(
    status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    kind = {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_error"}.get(
        status, "server_error"
    )
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def make_app(runner: Runner, settings: ServerSettings, tracing: Tracing | None = None) -> FastAPI:
    """The FastAPI app; the batcher runs while the app's lifespan does."""
    trace_out = tracing or Tracing(None)
    holder: dict[str, Batcher] = {}

    def on_batch(batch: Batch) -> None:
        trace_out.batch_span(batch)
        metrics.batch(batch)

    metrics = ServerMetrics(lambda: holder["batcher"].queued_items if "batcher" in holder else 0)
    formats = video_formats()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher = Batcher(
            runner,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1e3,
            max_queue_items=settings.max_queue_items,
            on_batch=on_batch,
        )
        holder["batcher"] = batcher
        task = asyncio.create_task(batcher.run())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            batcher.close()
            trace_out.shutdown()

    app = FastAPI(title="jouletrace diffusion server", lifespan=lifespan)
    app.state.metrics = metrics
    app.state.holder = holder

    async def generate(request: Request, kind: str, parse: Callable[[Any], JobSpec]) -> Response:
        try:
            spec = parse(await request.json())
        except InvalidRequest as err:
            metrics.request(kind, "invalid")
            return _error(err.status, str(err), err.field)
        except ValueError:
            metrics.request(kind, "invalid")
            return _error(400, "body: not valid JSON", "body")
        if spec.response_format == "url" and settings.output_dir is None:
            metrics.request(kind, "invalid")
            return _error(400, "response_format: 'url' needs the server's --output-dir", "response_format")
        batcher = holder["batcher"]
        loop = asyncio.get_running_loop()
        job = Job(
            f"{_PREFIX[kind]}-{uuid.uuid4().hex}",
            spec,
            loop.create_future(),
            time.monotonic(),
            time.time_ns(),
        )
        parent = Tracing.parent(request.headers)
        try:
            batcher.submit(job)
        except QueueFull as err:
            metrics.request(kind, "rejected")
            retry = f"{err.retry_after_s:.0f}"
            return _error(
                429,
                f"queue full ({settings.max_queue_items} items); retry after {retry} s",
                headers={"Retry-After": retry},
            )
        gone = False
        while not job.future.done():
            await asyncio.wait({job.future}, timeout=settings.disconnect_poll_s)
            if not job.future.done() and not gone and await request.is_disconnected():
                gone = True
                if batcher.cancel(job):
                    metrics.request(kind, "cancelled")
                    return Response(status_code=499)
        batch = job.batch
        assert batch is not None
        if job.future.exception() is not None:  # retrieved here, so asyncio does not log it again
            trace_out.request_span(job, parent, "disconnected" if gone else "error", 0)
            metrics.request(kind, "error")
            return _error(500, f"batch {batch.batch_id} failed: {type(batch.error).__name__}: {batch.error}")
        outputs = job.future.result()
        if gone:  # ran for nobody; its energy is still counted
            trace_out.request_span(job, parent, "disconnected", len(outputs))
            metrics.request(kind, "disconnected")
            return Response(status_code=499)
        data = await asyncio.to_thread(_encode, job, outputs, formats, settings.output_dir)
        trace_out.request_span(job, parent, "ok", len(outputs))
        metrics.request(kind, "ok", len(outputs))
        body = {
            "id": job.request_id,
            "created": int(time.time()),
            "model": spec.shape.model,
            "batch": {
                "id": batch.batch_id,
                "size": batch.items,
                "start_unix_s": batch.start_unix_ns / 1e9,
                "end_unix_s": batch.end_unix_ns / 1e9,
            },
            "data": data,
        }
        return JSONResponse(body, headers={"X-Request-Id": job.request_id})

    runner_models = runner.models

    @app.post("/v1/images/generations")
    async def images(request: Request) -> Response:
        limits, steps = settings.limits, settings.default_steps
        return await generate(
            request, "image", lambda b: parse_image(b, runner_models.get("image"), limits, steps)
        )

    @app.post("/v1/videos/generations")
    async def videos(request: Request) -> Response:
        limits, steps = settings.limits, settings.default_steps
        return await generate(
            request, "video", lambda b: parse_video(b, runner_models.get("video"), limits, steps, formats)
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        batcher = holder.get("batcher")
        return {
            "status": "ok" if batcher is not None else "starting",
            "models": runner_models,
            "queue_items": batcher.queued_items if batcher else 0,
            "max_batch_size": settings.max_batch_size,
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def _encode(
    job: Job, outputs: list[Any], formats: tuple[str, ...], output_dir: Path | None
) -> list[dict[str, Any]]:
    spec = job.spec
    out: list[dict[str, Any]] = []
    for k, item in enumerate(outputs):
        if spec.shape.kind == "image":
            ext, data = "png", encode_image(item)
        else:
            ext = spec.container if spec.container in formats else formats[0]
            data = encode_video(item, spec.fps, ext)
        entry: dict[str, Any] = {"mime_type": MIME[ext]}
        if spec.response_format == "url" and output_dir is not None:
            path = output_dir / f"{job.request_id}-{k}.{ext}"
            path.write_bytes(data)
            entry["url"] = path.resolve().as_uri()
        else:
            entry["b64_json"] = b64(data)
        out.append(entry)
    return out
