"""The sidecar's HTTP surface: /metrics, /v1/requests/{request_id}, /healthz, /readyz.

The app only calls what it is given, so it knows nothing of meters, attribution
or SQLite: ``metrics()`` returns the Prometheus exposition bytes,
``lookup(request_id)`` returns a record (in flight with ``final: false``, or from
the ledger) or ``None``, ``ready()`` returns ``(ready, reason)``. The callables
run on the event loop, so they must be quick (an in-memory read, a primary-key
SQLite lookup, one render).

Routes:

- ``GET /metrics``: 200, Prometheus text, ``Content-Type: prometheus_client.CONTENT_TYPE_LATEST``.
- ``GET /v1/requests/{request_id}``: 200 with the record as JSON (energies in
  joules, times in seconds); 404 ``{"error": ..., "request_id": ...}`` when the
  id is unknown or not yet seen; 400 ``{"error": ..., "reason": ...}`` when the id
  fails the taps' id check (:func:`sidecar.taps.validate.request_id`: empty, over
  256 characters, not printable), counted in ``counts["rejected_<reason>"]``; 500
  ``{"error": ...}`` when the lookup fails (counted ``lookup_errors``; the server
  keeps serving).
- ``GET /healthz``: 200 ``ok`` while the process serves.
- ``GET /readyz``: 200 ``{"ready": true, "reason": ...}`` or 503 with ``"ready": false``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from sidecar.taps import validate as v

__all__ = ["Served", "make_app", "serve"]

log = logging.getLogger(__name__)

NOT_FOUND = (
    "unknown request id: the sidecar has not seen this request yet (its span or work events may still be on "
    "the way) or the ledger no longer keeps it"
)


def make_app(
    *,
    metrics: Callable[[], bytes],
    lookup: Callable[[str], dict[str, Any] | None],
    ready: Callable[[], tuple[bool, str]],
    counts: Counter[str] | None = None,
) -> web.Application:
    """Build the aiohttp application over the three callables (see the module docstring).

    ``counts`` receives the refused requests by outcome (a fresh ``Counter`` if not given).
    """
    refused: Counter[str] = Counter() if counts is None else counts

    async def get_metrics(request: web.Request) -> web.Response:
        return web.Response(body=metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_request(request: web.Request) -> web.Response:
        try:
            request_id = v.request_id(request.match_info["request_id"])
        except v.Rejected as err:
            v.note(refused, err)
            return web.json_response({"error": f"bad request id: {err}", "reason": err.reason}, status=400)
        try:
            record = lookup(request_id)
        except Exception:  # a failing store must not take the API down: 500 for this request, go on
            refused["lookup_errors"] += 1
            log.exception("lookup of %r failed", request_id)
            return web.json_response({"error": "lookup failed", "request_id": request_id}, status=500)
        if record is None:
            return web.json_response({"error": NOT_FOUND, "request_id": request_id}, status=404)
        return web.json_response(record)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        ok, reason = ready()
        return web.json_response({"ready": ok, "reason": reason}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/v1/requests/{request_id}", get_request)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@dataclass(frozen=True, slots=True)
class Served:
    """A running app: its runner, and the host and port it is bound to (the real port when 0 was asked)."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9464``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        """Stop serving and release the port."""
        await self.runner.cleanup()


async def serve(app: web.Application, host: str, port: int, *, access_log: bool = False) -> Served:
    """Start ``app`` on ``host:port`` (``port=0`` picks a free one) and return where it listens.

    Access logging is off by default: Prometheus scrapes every few seconds.
    """
    runner = web.AppRunner(app) if access_log else web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    return Served(runner=runner, host=str(bound_host), port=int(bound_port))
