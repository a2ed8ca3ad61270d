"""/metrics as served over HTTP: rendered once per snapshot, within a budget of CPU, then reused.

The exposition text was rendered on the event loop that answers every HTTP request, once per
request. With the label sets at their caps it is hundreds of kB and a tenth of a second, and
clients that pipeline ``GET /metrics`` without reading (an adversarial run: 250 connections x 200
requests) kept the loop rendering: /healthz went unanswered for minutes. Now the HTTP handler
renders on a worker thread (the loop answers meanwhile), and the text is made again only when the
snapshot is another one (a tick ran since: every instrument reads the snapshot, and the histograms
change only inside a tick) and while the render budget lasts. Requests in between get the same bytes.

The budget is a token bucket of render CPU seconds (the rendering thread's own CPU time, not the
wall time, which a loaded machine stretches): it fills at ``max_share`` (0.1) a wall second up to
``burst_s`` (1 s), and each render takes its cost out. Clients that read at a sane rate (Prometheus
every 15 s; the load generator every 0.2 s, a few ms a render) therefore always get the latest
snapshot; a flood of scrapes spends the burst and then gets pages made at most a tenth of the time.

Freshness matters to clients that date a page by when they read it: the load generator dates the
energy on a page by its scrape (the idle energy ``jouletrace_attribution_lag_seconds`` before it),
and Prometheus stamps a sample with its scrape time. A first cache, which reused a page for ten
times its wall render time, served a CI run a page from before the run's last client spans
(``tasks_by_id`` 3 of 60): on a loaded box a render's wall time, and so the reuse, grew to seconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["MAX_RENDER_BURST_S", "MAX_RENDER_SHARE", "RenderCache"]

MAX_RENDER_SHARE = 0.1  # of wall time, over the long run, spent rendering /metrics
MAX_RENDER_BURST_S = 1.0  # render CPU seconds that may be spent at once after a quiet while


class RenderCache:
    """``render()``'s bytes, made again only once ``version()`` is another object and while the
    render budget (module docstring) is not spent."""

    def __init__(
        self,
        render: Callable[[], bytes],
        version: Callable[[], object],
        *,
        max_share: float = MAX_RENDER_SHARE,
        burst_s: float = MAX_RENDER_BURST_S,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        if not 0.0 < max_share <= 1.0:
            raise ValueError(f"max_share must lie in (0, 1], got {max_share!r}")
        if not (burst_s > 0.0 and math.isfinite(burst_s)):
            raise ValueError(f"burst_s must be a positive number of seconds, got {burst_s!r}")
        self._render, self._version = render, version
        self.max_share, self.burst_s = max_share, burst_s
        self._clock, self._cpu_clock = clock, cpu_clock
        self._lock = threading.Lock()
        self._body: bytes | None = None
        self._of: object = None  # the version the body was rendered from
        self._budget_s = burst_s  # render CPU seconds that may be spent now (below 0: in debt)
        self._filled_at = clock()
        self.renders = 0

    def __call__(self) -> bytes:
        with self._lock:
            now = self._clock()
            self._budget_s = min(self.burst_s, self._budget_s + (now - self._filled_at) * self.max_share)
            self._filled_at = now
            body = self._body
            if body is not None and self._budget_s <= 0.0:
                return body
            version = self._version()
            if body is not None and version is self._of:
                return body
            began_cpu_s = self._cpu_clock()
            self._body, self._of = self._render(), version
            self._budget_s -= max(self._cpu_clock() - began_cpu_s, 0.0)
            self.renders += 1
            return self._body
