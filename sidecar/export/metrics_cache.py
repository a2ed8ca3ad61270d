"""/metrics as served over HTTP: rendered once per snapshot, at a bounded share of the CPU, then reused.

The exposition text was rendered on the event loop that answers every HTTP request, once per
request. With the label sets at their caps it is hundreds of kB and a tenth of a second, and
clients that pipeline ``GET /metrics`` without reading (an adversarial run: 250 connections x 200
requests) kept the loop rendering: /healthz went unanswered for minutes. Now the HTTP handler
renders on a worker thread (the loop answers meanwhile), and the text is made again only when the
snapshot is another one (a tick ran since: every instrument reads the snapshot, and the histograms
change only inside a tick) and once the last render's own time, divided by ``max_share`` (0.1),
has passed since it began: rendering takes at most a tenth of the wall time whoever asks. Requests
in between get the same bytes.

A page is thus as fresh as its cost allows: a render of a few ms (the usual label sets) may be made
again every few tens of ms, i.e. for every tick (0.1 s apart), so a scrape sees the latest snapshot,
as before the cache; at the caps (0.1 s a render) it is made at most once a second. The freshness
matters to clients that date a page by when they read it: the load generator dates the idle energy
on a page (``jouletrace_attribution_lag_seconds`` before its scrape), and a page a second old moved
that date by a second (a CI run saw its closing reading dated before the run's last request ended).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["MAX_RENDER_SHARE", "RenderCache"]

MAX_RENDER_SHARE = 0.1  # of wall time, at most, spent rendering /metrics


class RenderCache:
    """``render()``'s bytes, made again only once ``version()`` is another object and the last
    render's time divided by ``max_share`` has passed since it began."""

    def __init__(
        self,
        render: Callable[[], bytes],
        version: Callable[[], object],
        *,
        max_share: float = MAX_RENDER_SHARE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 < max_share <= 1.0:
            raise ValueError(f"max_share must lie in (0, 1], got {max_share!r}")
        self._render, self._version = render, version
        self.max_share, self._clock = max_share, clock
        self._lock = threading.Lock()
        self._body: bytes | None = None
        self._of: object = None  # the version the body was rendered from
        self._next = -float("inf")  # when (clock) a render may begin again
        self.renders = 0

    def __call__(self) -> bytes:
        with self._lock:
            began = self._clock()
            body = self._body
            if body is not None and began < self._next:
                return body
            version = self._version()
            if body is not None and version is self._of:
                return body
            self._body, self._of = self._render(), version
            self._next = began + (self._clock() - began) / self.max_share
            self.renders += 1
            return self._body
