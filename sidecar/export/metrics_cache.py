"""/metrics as served over HTTP: rendered once per snapshot, at most once per interval, then reused.

The exposition text was rendered on the event loop that answers every HTTP request, once per
request. With the label sets at their caps it is hundreds of kB and a tenth of a second, and
clients that pipeline ``GET /metrics`` without reading (an adversarial run: 250 connections x 200
requests) kept the loop rendering: /healthz went unanswered for minutes. Now the HTTP handler
renders on a worker thread (the loop answers meanwhile), and the text is made again only when the
snapshot is another one (a tick ran since: every instrument reads the snapshot, and the histograms
change only inside a tick) and at most every ``min_interval_s`` (1 s; Prometheus scrapes every
15 s by default), so a scrape sees the sidecar as of at most that long before it. Requests in
between get the same bytes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["MIN_RENDER_INTERVAL_S", "RenderCache"]

MIN_RENDER_INTERVAL_S = 1.0


class RenderCache:
    """``render()``'s bytes, made again only once ``version()`` is another object and
    ``min_interval_s`` has passed since the last render."""

    def __init__(
        self,
        render: Callable[[], bytes],
        version: Callable[[], object],
        *,
        min_interval_s: float = MIN_RENDER_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._render, self._version = render, version
        self.min_interval_s, self._clock = min_interval_s, clock
        self._lock = threading.Lock()
        self._body: bytes | None = None
        self._of: object = None  # the version the body was rendered from
        self._at = -float("inf")  # when (clock)
        self.renders = 0

    def __call__(self) -> bytes:
        with self._lock:
            now = self._clock()
            body = self._body
            if body is not None and now - self._at < self.min_interval_s:
                return body
            version = self._version()
            if body is not None and version is self._of:
                return body
            self._body, self._of, self._at = self._render(), version, now
            self.renders += 1
            return self._body
