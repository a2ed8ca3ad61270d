"""The proxy process's code (:class:`~sidecar.proxy.process.ProxyProcess`) with the sidecar's receiver,
behind the surface the tests use of the in-process :class:`~sidecar.proxy.tap.ProxyTap`.

The proxy runs its own event loop on a thread (as in ``jouletrace proxy``, minus the
process boundary, so a test starts in milliseconds); it sends its rows over real UDP
to a :class:`~sidecar.taps.proxy_wire.ProxyWireReceiver` and fetches its prices over
real HTTP from the sidecar's API app (``make_app(prices=...)``). ``due()`` drains the
receiver, as the sidecar's tick does; ``stats()`` is the proxy's own counters (the
receiver gets them a flush later, tested in test_process.py).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.attribution.records import TapReport
from sidecar.config import load_config
from sidecar.contracts.proxy_wire import PriceSheet
from sidecar.export.api import make_app, serve
from sidecar.proxy.process import ProxyProcess
from sidecar.taps.proxy_wire import ProxyWireReceiver
from sidecar.taps.spans import WallToMono
from tests.support import free_port


class ProcessProxy:
    """A ProxyProcess on its own loop and thread, its receiver, and a price server."""

    knob = "proxy_port"

    def __init__(self, upstream: str, sheet: PriceSheet | None, **knobs: Any) -> None:
        self.sheet = sheet
        self.receiver = ProxyWireReceiver(WallToMono(), port=0, hold_s=1.0)
        self.api_port = free_port()
        names = {"tenant_header": "proxy_tenant_header", "max_body_bytes": "proxy_max_body_bytes"}
        given = {names.get(k, k): str(v) for k, v in knobs.items()}
        self.config = load_config(
            {
                "proxy_upstream": upstream,
                "proxy_port": "0",
                "proxy_sidecar_url": f"http://127.0.0.1:{self.api_port}",
                "proxy_wire_port": str(self.receiver.start()),
                **given,
            },
            environ={},
        )
        self.proxy = ProxyProcess(self.config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.proxy.server.port

    def start(self) -> int:
        ready = threading.Event()

        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            prices = None if self.sheet is None else self.sheet.to_json
            app = make_app(metrics=bytes, lookup=lambda _: None, ready=lambda: (True, ""), prices=prices)
            api = await serve(app, "127.0.0.1", self.api_port)
            running = asyncio.create_task(self.proxy.run(self._stop))
            while self.proxy.server._runner is None and not running.done():
                await asyncio.sleep(0.005)
            ready.set()
            await running
            await api.close()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.port

    def stop_proxy(self, grace_s: float = 1.0) -> None:
        """Stop the proxy (as on SIGTERM); the receiver goes on."""
        loop, stop, thread = self._loop, self._stop, self._thread
        self._loop = self._stop = self._thread = None
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(timeout=grace_s + 5.0)

    def stop(self, grace_s: float = 1.0) -> None:
        self.stop_proxy(grace_s)
        self.receiver.stop()

    def due(self, now_s: float) -> tuple[list[WorkEvent], list[RequestInfo]]:
        return self.receiver.due(now_s)

    @property
    def live_requests(self) -> int:
        return self.proxy.sender.live + self.receiver.live_requests

    def stats(self) -> TapReport:
        return TapReport(events={("proxy", what): n for what, n in self.proxy.counts.counts().items()})
