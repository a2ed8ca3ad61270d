"""A job run every period on the event loop, until told to stop: the sidecar's tick."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

__all__ = ["run_every"]

log = logging.getLogger(__name__)


async def run_every(period_s: float, job: Callable[[], object], stop: asyncio.Event) -> None:
    """Run ``job`` every ``period_s`` until ``stop`` is set. A job that raises is logged and the
    next run comes on time (a bug in one pass must not stop the sidecar); a run that falls behind
    skips the slots it missed instead of running them back to back."""
    next_t = time.monotonic()
    while not stop.is_set():
        try:
            job()
        except Exception:
            log.exception("periodic job %s failed", getattr(job, "__name__", job))
        next_t += period_s
        delay = next_t - time.monotonic()
        if delay < 0:
            next_t = time.monotonic()
            delay = 0
        await asyncio.sleep(delay)
