"""The proxy as a tap: its own thread and event loop, work events drained at each tick.

The proxy serves on a thread of its own (an asyncio loop with the aiohttp
server and one client session to the upstream), so a slow attribution pass
never delays a stream and a slow stream never delays a tick. The forwarder
registers each completion's :class:`~sidecar.proxy.learn.RequestTrace`; at each
tick :meth:`ProxyTap.due` turns what the traces gained since the last tick into
work events and request infos (:mod:`.work`) and forgets finished traces.

Start-up failures (the port taken, a bad upstream URL) raise
:class:`~sidecar.errors.ConfigError` naming the knob.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.attribution.records import TapReport
from sidecar.errors import ConfigError
from sidecar.proxy.energy import Prices, RequestWork, provisional_energy
from sidecar.proxy.forward import make_proxy_app
from sidecar.proxy.learn import Counts, RequestTrace, new_request_id
from sidecar.proxy.upstream import ProxyContext
from sidecar.proxy.work import TraceCursor, request_info

__all__ = ["ProxyTap", "check_upstream"]

log = logging.getLogger(__name__)


def check_upstream(url: str) -> str:
    """The upstream base URL without a trailing slash; ConfigError unless it is http(s)://host[:port]."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"proxy_upstream: {url!r} is not an http(s)://host[:port] URL")
    return url.rstrip("/")


class ProxyTap:
    """An OpenAI-compatible reverse proxy that is also a work source."""

    knob = "proxy_port"  # the knob of the port it listens on (the Tap protocol's start-up error names it)

    def __init__(
        self,
        upstream: str,
        *,
        prices: Callable[[], Prices],
        record_base: Callable[[str], str],
        host: str = "127.0.0.1",
        port: int = 0,
        tenant_header: str = "",
        max_body_bytes: int = 8 << 20,
        hold_s: float = 1.0,
        model: str = "unknown",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = check_upstream(upstream)
        self.host, self.port = host, port
        self.hold_s, self.model, self.clock = hold_s, model, clock
        self.counts = Counts()
        self._prices, self._record_base = prices, record_base
        self._lock = threading.Lock()
        self._live: dict[str, TraceCursor] = {}
        self._seen: set[str] = set()  # ids whose start info was handed on
        self._ctx = ProxyContext(
            upstream=self.upstream,
            clock=clock,
            begin=self._begin,
            energy=self._energy,
            record_url=lambda req, rid: f"{record_base(req.url.host or self.host)}/v1/requests/{rid}",
            counts=self.counts,
            tenant_header=tenant_header,
        )
        self._app = make_proxy_app(self._ctx, max_body_bytes)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ---- called on the proxy's thread ------------------------------------------------
    def _begin(self, trace: RequestTrace) -> str:
        with self._lock:
            if trace.request_id in self._live:
                self.counts.add("duplicate_request_id")
                trace.request_id = new_request_id()
            self._live[trace.request_id] = TraceCursor(trace)
        return trace.request_id

    def _energy(self, trace: RequestTrace) -> dict[str, Any]:
        prompt, output = trace.usage if trace.usage is not None else (0, len(trace.chunk_s))
        work = RequestWork(prompt, output, trace.shared_s, trace.shared_steps)
        return provisional_energy(self._prices(), work).to_json()

    # ---- the Tap protocol --------------------------------------------------------------
    def start(self) -> int:
        """Serve on a thread of its own; the bound port."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._serve())
            except BaseException as err:  # reported to start() below
                failure.append(err)
                loop.close()
                ready.set()
                return
            self._loop = loop
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=main, name="jouletrace-proxy", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            err = failure[0]
            raise ConfigError(
                f"proxy_port: cannot serve the proxy on {self.host}:{self.port}: {err}"
            ) from err
        log.info("OpenAI proxy on http://%s:%d -> %s", self.host, self.port, self.upstream)
        return self.port

    async def _serve(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0)
        connector = aiohttp.TCPConnector(limit=0)
        self._ctx.session = aiohttp.ClientSession(timeout=timeout, connector=connector, auto_decompress=False)
        runner = web.AppRunner(self._app, access_log=None, handler_cancellation=True)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, backlog=1024)
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self._ctx.session.close()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._ctx.session is not None:
            await self._ctx.session.close()

    def stop(self, grace_s: float = 1.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=grace_s + 5.0)
        self._loop = self._thread = None

    def due(self, now_s: float) -> tuple[list[WorkEvent], list[RequestInfo]]:
        """Work the live traces made since the last call; infos at first sight and at the end."""
        with self._lock:
            cursors = list(self._live.values())
        events: list[WorkEvent] = []
        infos: list[RequestInfo] = []
        finished: list[str] = []
        for cursor in cursors:
            trace = cursor.trace
            done = trace.done  # read before draining: events made before it are all in
            if trace.outcome == "upstream_down" or (done and trace.status >= 400 and not trace.chunk_s):
                finished.append(trace.request_id)  # no work reached an engine
                continue
            events.extend(cursor.drain(now_s, self.hold_s))
            rid = trace.request_id
            if done or rid not in self._seen:
                infos.append(request_info(cursor, self.model))
                self._seen.add(rid)
            if done:
                finished.append(rid)
        with self._lock:
            for rid in finished:
                self._live.pop(rid, None)
                self._seen.discard(rid)
        return events, infos

    @property
    def live_requests(self) -> int:
        """Completions registered and not yet handed on as finished."""
        with self._lock:
            return len(self._live)

    def stats(self) -> TapReport:
        """Requests by outcome and rejected fields, as ``jouletrace.tap.events{jouletrace_tap="proxy"}``."""
        return TapReport(events={("proxy", what): n for what, n in self.counts.counts().items()})
