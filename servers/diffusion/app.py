"""The HTTP API (FastAPI): images, videos, health, metrics.

    POST /v1/images/generations   OpenAI images shape (prompt, n, size, response_format) + steps,
                                  guidance, seed, model
    POST /v1/videos/generations   prompt, size, num_frames, fps, steps, guidance, seed, format (mp4|gif),
                                  response_format (b64_json | url: a file:// URL under --output-dir)
    GET  /health                  models, queue depth
    GET  /metrics                 the server's own counters (Prometheus text)

Every response of a request that ran carries ``id`` (the request id the
sidecar's ``/v1/requests/{id}`` knows; also the ``X-Request-Id`` header) and
``batch``: its id, size (items) and the pipeline call's start and end
(``start_unix_s``, ``end_unix_s``), so a client can time each batch as the study
does (the sidecar's ``/v1/energy`` over that interval). Errors use the OpenAI
shape ``{"error": {"message", "type", "param", "code"}}``: 400/404 for bad input
(naming the field and the limit), 429 with Retry-After
when the queue is full, 500 when the request's batch failed.

A request's id is the ``X-Request-Id`` the client sent, as vLLM's is, so a client that names
its requests (the load generator, and its client spans' ``jouletrace.request.id``) finds their
records by its own ids. The header is taken only if it is a safe name (:data:`CLIENT_ID`: letters,
digits and ``._:-``, at most 128 characters, as it names output files too) that no request of the
last :data:`RECENT_IDS` taken here had (the sidecar refuses work for an id it has made final, so
a reused id would lose the second request's energy); otherwise the server makes one
(``img-<uuid hex>``, ``vid-<uuid hex>``). An id refused with 429, or cancelled before its batch
ran, is free again (nothing ran under it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections import OrderedDict
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
CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # an X-Request-Id taken as the request id
RECENT_IDS = 100_000  # client ids remembered, as many as the sidecar remembers final ids (~12 MB)


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


@dataclass
class _Service:
    """What the handlers share: settings, metrics, tracing, the video formats, the batcher once started."""

    settings: ServerSettings
    metrics: ServerMetrics
    tracing: Tracing
    formats: tuple[str, ...]
    holder: dict[str, Batcher] = field(default_factory=dict)
    taken: OrderedDict[str, None] = field(default_factory=OrderedDict)  # client ids taken, oldest first

    def on_batch(self, batch: Batch) -> None:
        self.tracing.batch_span(batch)
        self.metrics.batch(batch)

    async def generate(self, request: Request, kind: str, parse: Callable[[Any], JobSpec]) -> Response:
        """Parse, queue, wait for the batch (or the client leaving), answer."""
        spec = await self._parse(request, kind, parse)
        if isinstance(spec, Response):
            return spec
        loop = asyncio.get_running_loop()
        request_id = self._request_id(kind, request)
        job = Job(request_id, spec, loop.create_future(), time.monotonic(), time.time_ns())
        parent = Tracing.parent(request.headers)
        rejected = self._submit(kind, job)
        if rejected is not None:
            self.taken.pop(request_id, None)  # never ran: the client may send it again
            return rejected
        gone = await self._wait(request, job)
        if gone is None:  # cancelled before it ran
            self.taken.pop(request_id, None)
            self.metrics.request(kind, "cancelled")
            return Response(status_code=499)
        return await self._respond(kind, job, parent, gone)

    def _request_id(self, kind: str, request: Request) -> str:
        """The client's ``X-Request-Id`` if it is a safe name not taken recently (taken now), else a
        new id. No await between this and the submit: two requests cannot take one id."""
        sent = request.headers.get("x-request-id", "")
        if not CLIENT_ID.fullmatch(sent) or sent in self.taken:
            return f"{_PREFIX[kind]}-{uuid.uuid4().hex}"
        self.taken[sent] = None
        if len(self.taken) > RECENT_IDS:
            self.taken.popitem(last=False)
        return sent

    async def _parse(
        self, request: Request, kind: str, parse: Callable[[Any], JobSpec]
    ) -> JobSpec | Response:
        """The job's spec, or the 400 that names the bad field (counted ``invalid``)."""
        try:
            spec = parse(await request.json())
        except InvalidRequest as err:
            self.metrics.request(kind, "invalid")
            return _error(err.status, str(err), err.field)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            self.metrics.request(kind, "invalid")
            return _error(400, "body: not valid JSON", "body")
        if spec.response_format == "url" and self.settings.output_dir is None:
            self.metrics.request(kind, "invalid")
            return _error(400, "response_format: 'url' needs the server's --output-dir", "response_format")
        return spec

    def _submit(self, kind: str, job: Job) -> Response | None:
        """Queue the job; the 429 with Retry-After when the queue is full."""
        try:
            self.holder["batcher"].submit(job)
        except QueueFull as err:
            self.metrics.request(kind, "rejected")
            retry = f"{err.retry_after_s:.0f}"
            return _error(
                429,
                f"queue full ({self.settings.max_queue_items} items); retry after {retry} s",
                headers={"Retry-After": retry},
            )
        return None

    async def _wait(self, request: Request, job: Job) -> bool | None:
        """Until the job's batch is done: whether the client left meanwhile; ``None`` if cancelled unrun."""
        gone = False
        while not job.future.done():
            await asyncio.wait({job.future}, timeout=self.settings.disconnect_poll_s)
            if not job.future.done() and not gone and await request.is_disconnected():
                gone = True
                if self.holder["batcher"].cancel(job):
                    return None
        return gone

    async def _respond(self, kind: str, job: Job, parent: Any, gone: bool) -> Response:
        """The 500 of a failed batch, 499 for a client that left, else the outputs and the batch's times."""
        batch = job.batch
        assert batch is not None
        if job.future.exception() is not None:  # retrieved here, so asyncio does not log it again
            self.tracing.request_span(job, parent, "disconnected" if gone else "error", 0)
            self.metrics.request(kind, "error")
            return _error(500, f"batch {batch.batch_id} failed: {type(batch.error).__name__}: {batch.error}")
        outputs = job.future.result()
        if gone:  # ran for nobody; its energy is still counted
            self.tracing.request_span(job, parent, "disconnected", len(outputs))
            self.metrics.request(kind, "disconnected")
            return Response(status_code=499)
        data = await asyncio.to_thread(_encode, job, outputs, self.formats, self.settings.output_dir)
        self.tracing.request_span(job, parent, "ok", len(outputs))
        self.metrics.request(kind, "ok", len(outputs))
        body = {
            "id": job.request_id,
            "created": int(time.time()),
            "model": job.spec.shape.model,
            "batch": {
                "id": batch.batch_id,
                "size": batch.items,
                "start_unix_s": batch.start_unix_ns / 1e9,
                "end_unix_s": batch.end_unix_ns / 1e9,
            },
            "data": data,
        }
        return JSONResponse(body, headers={"X-Request-Id": job.request_id})


def _lifespan(
    runner: Runner, service: _Service
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Start the batcher with the app, stop it (and flush tracing) when the app stops."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = service.settings
        batcher = Batcher(
            runner,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1e3,
            max_queue_items=settings.max_queue_items,
            on_batch=service.on_batch,
            on_start=service.tracing.batch_start_span,
        )
        service.holder["batcher"] = batcher
        task = asyncio.create_task(batcher.run())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            batcher.close()
            service.tracing.shutdown()

    return lifespan


def make_app(runner: Runner, settings: ServerSettings, tracing: Tracing | None = None) -> FastAPI:
    """The FastAPI app; the batcher runs while the app's lifespan does."""
    holder: dict[str, Batcher] = {}
    metrics = ServerMetrics(lambda: holder["batcher"].queued_items if "batcher" in holder else 0)
    service = _Service(settings, metrics, tracing or Tracing(None), video_formats(), holder)
    app = FastAPI(title="jouletrace diffusion server", lifespan=_lifespan(runner, service))
    app.state.metrics = metrics
    app.state.holder = holder
    runner_models = runner.models
    limits, steps, formats = settings.limits, settings.default_steps, service.formats

    @app.post("/v1/images/generations")
    async def images(request: Request) -> Response:
        return await service.generate(
            request, "image", lambda b: parse_image(b, runner_models.get("image"), limits, steps)
        )

    @app.post("/v1/videos/generations")
    async def videos(request: Request) -> Response:
        return await service.generate(
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
