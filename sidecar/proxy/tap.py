"""The proxy inside the sidecar's process: its own thread and event loop, work drained at each tick.

``jouletrace sidecar --proxy-upstream URL`` (the layout before the proxy had a
process of its own; ``jouletrace proxy`` is that, :mod:`.process`). The proxy
serves on a thread of its own (an asyncio loop with the aiohttp server and one
client session to the upstream), so a slow stream never delays a tick; it shares
the interpreter lock with the tick, which is why the separate process is the
default (docs/proxy.md). The forwarder registers each completion's
:class:`~sidecar.proxy.learn.RequestTrace` in a :class:`~sidecar.proxy.book.TraceBook`;
at each tick :meth:`ProxyTap.due` turns what the traces gained into work events and
request infos. Prices come straight from the sidecar's snapshot (no HTTP).

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

from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.attribution.records import TapReport
from sidecar.contracts.proxy_wire import alive_every_s
from sidecar.proxy.book import TraceBook
from sidecar.proxy.energy import Prices, trace_energy
from sidecar.proxy.learn import Counts, RequestTrace
from sidecar.proxy.loop import loop_factory
from sidecar.proxy.serve import ProxyServer, check_upstream
from sidecar.proxy.upstream import ProxyContext, record_path

__all__ = ["ProxyTap", "check_upstream"]  # check_upstream: re-exported from .serve

log = logging.getLogger(__name__)


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
        claimed_by: Callable[[str], bool] | None = None,
        request_timeout_s: float = 600.0,
    ) -> None:
        self.upstream = check_upstream(upstream)
        self.host, self.port = host, port
        # not named hold_s: seal_until calls a tap's hold_s(now) (a float there failed every tick)
        self.hold_after_s, self.model, self.clock = hold_s, model, clock
        self.counts = Counts()
        self._prices, self._record_base = prices, record_base
        self._book = TraceBook(
            self.counts,
            hold_s=hold_s,
            model=model,
            claimed_by=claimed_by,
            alive_every_s=alive_every_s(request_timeout_s),  # no work yet is not gone
        )
        self._ctx = ProxyContext(
            upstream=self.upstream,
            clock=clock,
            begin=self._book.begin,
            energy=self._energy,
            record_url=lambda req, rid: record_base(req.url.host or self.host) + record_path(rid),
            counts=self.counts,
            tenant_header=tenant_header,
        )
        self._server = ProxyServer(self._ctx, host, port, max_body_bytes)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---- called on the proxy's thread ------------------------------------------------
    def _energy(self, trace: RequestTrace) -> dict[str, Any]:
        return trace_energy(trace, self._prices())

    # ---- the Tap protocol --------------------------------------------------------------
    def start(self) -> int:
        """Serve on a thread of its own; the bound port."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = loop_factory()()  # uvloop where installed
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
            raise failure[0]
        log.info("OpenAI proxy on http://%s:%d -> %s", self.host, self.port, self.upstream)
        return self.port

    async def _serve(self) -> None:
        self.port = await self._server.start()

    async def _shutdown(self) -> None:
        await self._server.close()

    def stop(self, grace_s: float = 1.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=grace_s + 5.0)
        self._loop = self._thread = None

    def due(self, now_s: float) -> tuple[list[WorkEvent], list[RequestInfo]]:
        """Work the live traces made since the last call; infos at first sight and at the end."""
        return self._book.due(now_s)

    @property
    def live_requests(self) -> int:
        """Completions registered and not yet handed on as finished."""
        return len(self._book)

    def stats(self) -> TapReport:
        """Requests by outcome and rejected fields, as ``jouletrace.tap.events{jouletrace_tap="proxy"}``."""
        return TapReport(events={("proxy", what): n for what, n in self.counts.counts().items()})
