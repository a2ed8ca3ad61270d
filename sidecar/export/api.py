"""The sidecar's HTTP surface: /metrics, /v1/requests/{request_id}, /v1/energy, /healthz, /readyz.

The app only calls what it is given, so it knows nothing of meters, attribution
or SQLite: ``metrics()`` returns the Prometheus exposition bytes,
``lookup(request_id)`` returns a record (in flight with ``final: false``, or from
the ledger) or ``None``, ``ready()`` returns ``(ready, reason)``. The callables
run on the event loop, so they must be quick (an in-memory read, a primary-key
SQLite lookup, one render).

Routes:

- ``GET /metrics``: 200, Prometheus text, ``Content-Type: prometheus_client.CONTENT_TYPE_LATEST`` (made on a
  worker thread; the sidecar passes a :class:`~sidecar.export.metrics_cache.RenderCache`).
- ``GET /v1/requests/{request_id}``: 200 with the record as JSON (energies in
  joules, times in seconds); 404 ``{"error": ..., "request_id": ...}`` when the
  id is unknown or not yet seen; 400 ``{"error": ..., "reason": ...}`` when the id
  fails the taps' id check (:func:`sidecar.taps.validate.request_id`: empty, over
  256 characters, not printable), counted in ``counts["rejected_<reason>"]``; 500
  ``{"error": ...}`` when the lookup fails (counted ``lookup_errors``; the server
  keeps serving).
- ``GET /v1/energy?start_unix_s=&end_unix_s=``: 200 with the device energy over that
  interval (J, all devices, read-only from the timeline: linear between counter
  updates), ``covered`` false when the interval reaches past the newest counter update
  or before the oldest kept one (ask again later / it is gone); 400
  ``{"error": ..., "param": ...}`` for a missing, non-finite or reversed bound or an
  interval longer than :data:`MAX_INTERVAL_S` (rejections are counted in
  ``app[ENERGY_REJECTED]`` and in ``counts["rejected_energy_interval"]``); 500 when the
  query fails (counted ``energy_errors``). Only served when ``make_app`` is given
  ``energy`` (:func:`timeline_energy`).
- ``GET /v1/prices``: 200 with the live fitted model as a price sheet
  (:class:`sidecar.contracts.proxy_wire.PriceSheet`), what the OpenAI proxy in its
  own process prices each response's provisional energy with; 500 when it cannot be
  built (counted ``price_errors``). Only served when ``make_app`` is given ``prices``.
- ``GET /healthz``: 200 ``ok`` while the process serves.
- ``GET /readyz``: 200 ``{"ready": true, "reason": ...}`` or 503 with ``"ready": false``.

Any other path is 404 and another method on these paths 405 (aiohttp's own answers), counted
``rejected_unknown_path`` and ``rejected_method`` (a scanner or a misconfigured client shows in
the self-metrics, as every other refusal does).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from sidecar.export.http_conns import IDLE_TIMEOUT_S, ConnectionCap
from sidecar.export.http_refusals import ServerLog
from sidecar.taps import validate as v

if TYPE_CHECKING:
    from sidecar.timeline import Timeline

__all__ = ["ENERGY_REJECTED", "MAX_INTERVAL_S", "Served", "make_app", "serve", "timeline_energy"]

MAX_INTERVAL_S = 86_400.0  # one day: longer than any timeline ring keeps
ENERGY_REJECTED: web.AppKey[list[int]] = web.AppKey("energy_rejected", list)
REFUSED: web.AppKey[Counter[str]] = web.AppKey("refused", Counter)  # make_app's counts, for serve
EnergyQuery = Callable[[float, float], dict[str, Any]]

log = logging.getLogger(__name__)

NOT_FOUND = (
    "unknown request id: the sidecar has not seen this request yet (its span or work events may still be on "
    "the way) or the ledger no longer keeps it"
)


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _request_handler(lookup: Callable[[str], dict[str, Any] | None], refused: Counter[str]) -> Handler:
    """``GET /v1/requests/{request_id}``: 400 for a bad id, 404 unknown, 500 when the lookup fails."""

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

    return get_request


def _energy_handler(energy: EnergyQuery, refused: Counter[str]) -> Handler:
    """``GET /v1/energy``: 400 for a bad interval, 500 when the query fails."""

    async def get_energy(request: web.Request) -> web.Response:
        bounds, error = _interval(request.query)
        if bounds is None:
            request.app[ENERGY_REJECTED][0] += 1
            refused["rejected_energy_interval"] += 1
            return web.json_response({"error": error[1], "param": error[0]}, status=400)
        try:
            answer = energy(*bounds)
        except Exception:  # as for lookups: 500 for this request, the server goes on
            refused["energy_errors"] += 1
            log.exception("energy query %r failed", bounds)
            return web.json_response({"error": "energy query failed"}, status=500)
        return web.json_response(answer)

    return get_energy


def _prices_handler(prices: Callable[[], dict[str, Any]], refused: Counter[str]) -> Handler:
    """``GET /v1/prices``: the price sheet, 500 when it cannot be built."""

    async def get_prices(request: web.Request) -> web.Response:
        try:
            return web.json_response(prices())
        except Exception:
            refused["price_errors"] += 1
            log.exception("price sheet failed")
            return web.json_response({"error": "price sheet failed"}, status=500)

    return get_prices


def make_app(
    *,
    metrics: Callable[[], bytes],
    lookup: Callable[[str], dict[str, Any] | None],
    ready: Callable[[], tuple[bool, str]],
    energy: EnergyQuery | None = None,
    counts: Counter[str] | None = None,
    prices: Callable[[], dict[str, Any]] | None = None,
) -> web.Application:
    """Build the aiohttp application over the callables (see the module docstring).

    ``counts`` receives the refused requests by outcome (a fresh ``Counter`` if not given).
    """
    refused: Counter[str] = Counter() if counts is None else counts

    async def get_metrics(request: web.Request) -> web.Response:
        body = await asyncio.to_thread(metrics)  # off the loop: /healthz answers while it renders
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        ok, reason = ready()
        return web.json_response({"ready": ok, "reason": reason}, status=200 if ok else 503)

    app = web.Application(middlewares=[_routing_refusals(refused)])
    app[ENERGY_REJECTED] = [0]
    app[REFUSED] = refused
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/v1/requests/{request_id}", _request_handler(lookup, refused))
    if energy is not None:
        app.router.add_get("/v1/energy", _energy_handler(energy, refused))
    if prices is not None:
        app.router.add_get("/v1/prices", _prices_handler(prices, refused))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def _routing_refusals(refused: Counter[str]) -> Any:
    """Middleware counting the requests the router refuses: no such path (404), no such method (405)."""

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPMethodNotAllowed:
            refused["rejected_method"] += 1
            raise
        except web.HTTPNotFound:
            refused["rejected_unknown_path"] += 1
            raise

    return count


def _interval(query: Any) -> tuple[tuple[float, float] | None, tuple[str, str]]:
    """``((start, end), _)`` from the query, or ``(None, (param, message))``."""
    values: list[float] = []
    for name in ("start_unix_s", "end_unix_s"):
        raw = query.get(name)
        if raw is None:
            return None, (name, f"{name}: required (Unix seconds)")
        try:
            value = float(raw)
        except ValueError:
            return None, (name, f"{name}: {raw[:40]!r} is not a number")
        if not math.isfinite(value) or value < 0:
            return None, (name, f"{name}: {raw[:40]!r} must be a finite number >= 0")
        values.append(value)
    start, end = values
    if end < start:
        return None, ("end_unix_s", f"end_unix_s ({end}) is before start_unix_s ({start})")
    if end - start > MAX_INTERVAL_S:
        return None, (
            "end_unix_s",
            f"end_unix_s: the interval ({end - start:.0f} s) is longer than {MAX_INTERVAL_S:.0f} s",
        )
    return (start, end), ("", "")


def timeline_energy(
    timeline: Timeline, *, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
) -> EnergyQuery:
    """The ``energy`` callable of :func:`make_app` over a timeline on the ``clock`` (monotonic) axis.

    Unix seconds become timeline seconds by the current offset ``wall() - clock()``.
    """

    def query(start_unix_s: float, end_unix_s: float) -> dict[str, Any]:
        offset = wall() - clock()
        t0, t1 = start_unix_s - offset, end_unix_s - offset
        span = timeline.span_s()  # the oldest and newest edge, not a copy of the ring
        covered = span is not None and span[0] < span[1] and span[0] <= t0 and t1 <= span[1]
        return {
            "start_unix_s": start_unix_s,
            "end_unix_s": end_unix_s,
            "energy_j": timeline.energy_between(t0, t1),
            "covered": bool(covered),
            "devices": [d.id for d in timeline.devices],
            "newest_update_unix_s": span[1] + offset if span is not None else None,
        }

    return query


@dataclass(frozen=True, slots=True)
class Served:
    """A running app: its runner, and the host and port it is bound to (the real port when 0 was asked)."""

    runner: web.AppRunner
    host: str
    port: int
    listener: asyncio.Server

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9464``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        """Stop serving and release the port."""
        self.listener.close()
        await self.runner.cleanup()


async def serve(app: web.Application, host: str, port: int, *, access_log: bool = False) -> Served:
    """Start ``app`` on ``host:port`` (``port=0`` picks a free one) and return where it listens.

    Access logging is off by default: Prometheus scrapes every few seconds. A request aiohttp
    refuses itself is counted in the app's refusals (:mod:`.http_refusals`), and so is a connection
    over the cap; an idle connection is closed (:mod:`.http_conns`).
    """
    refused = app[REFUSED] if REFUSED in app else Counter[str]()
    kwargs: dict[str, Any] = {"logger": ServerLog(refused), "keepalive_timeout": IDLE_TIMEOUT_S}
    if not access_log:
        kwargs["access_log"] = None
    runner = web.AppRunner(app, **kwargs)
    await runner.setup()
    try:
        assert runner.server is not None  # set up above
        listener = await asyncio.get_running_loop().create_server(
            ConnectionCap(runner.server, refused), host, port, reuse_address=True
        )
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = listener.sockets[0].getsockname()[:2]
    return Served(runner=runner, host=str(bound_host), port=int(bound_port), listener=listener)
