"""The HTTP server's connections: at most :data:`MAX_CONNECTIONS` open, an idle one closed.

aiohttp keeps a connection that never sends a request for its keep-alive timeout (3,630 s by
default) and sets no limit on how many are open: a client holding 1,100 of them against the
usual 1,024 file descriptors made every ``accept`` fail, and the sidecar spent a core logging
that while /healthz, /metrics and the OTLP receiver stopped answering (hostile probe, round 4).
Now a connection idle for :data:`IDLE_TIMEOUT_S` is closed (none sent, a head not finished, or
nothing since the last answer: aiohttp's keep-alive timeout, which runs from the connection's
start), and a new connection beyond the cap closes the oldest one open, counted ``http_api``
``evicted_connections`` (a warning at most once a minute). The newest are kept, not the oldest:
a client that holds connections cannot lock Prometheus or a kubelet probe out, whose connection
sends its request as soon as it is open. The cap leaves room in the process's 1,024 descriptors
for the OTLP receiver, the UDP taps and the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sidecar.log_limit import Every

__all__ = ["IDLE_TIMEOUT_S", "MAX_CONNECTIONS", "ConnectionCap"]

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 256
IDLE_TIMEOUT_S = 30.0  # a scrape every 30 s or more often keeps its connection


class ConnectionCap:
    """A protocol factory for ``loop.create_server``: aiohttp's server, which first closes its oldest
    connection when ``most`` are open (counted in ``counts``)."""

    def __init__(
        self,
        server: Any,
        counts: Counter[str],
        most: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server  # aiohttp's web.Server: a factory that lists its open connections, oldest first
        self.counts = counts
        self.most = MAX_CONNECTIONS if most is None else most
        self._log_now = Every(clock=clock)

    def __call__(self) -> asyncio.BaseProtocol:
        live = [c for c in self.server.connections if c.transport is not None]  # a closed one is listed
        if len(live) >= self.most:  # until its socket is gone (the loop's next turn): not again
            live[0].force_close()
            self.counts["evicted_connections"] += 1
            if self._log_now():
                log.warning(
                    "HTTP: %d connections open, the most kept; a new one closes the oldest (each counted in "
                    'jouletrace_tap_events_total{jouletrace_tap="http_api",outcome="evicted_connections"})',
                    self.most,
                )
        protocol: asyncio.BaseProtocol = self.server()
        return protocol
