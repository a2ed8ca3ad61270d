"""What aiohttp refuses on its own, before a handler runs: counted, logged as one short line.

A request aiohttp cannot read (a byte that is not ASCII in the path, a request line or header
over its limits, not HTTP at all) gets its 400 from aiohttp, which logs it at ERROR with a full
traceback on its ``aiohttp.server`` logger: a client could fill the sidecar's log with them,
and no self-metric counted them. :class:`ServerLog` stands in for that logger (aiohttp's
``logger`` argument): such a refusal is counted (``http_api`` ``rejected_malformed``) and
logged as a warning of one line, at most one every :data:`LOG_EVERY_S` (the count says how
many); anything else aiohttp reports, such as an exception a handler did not catch (a bug, a
500), is logged with its traceback as before.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from sidecar.log_limit import EVERY_S, Every

__all__ = ["LOG_EVERY_S", "ServerLog"]

LOG_EVERY_S = EVERY_S

log = logging.getLogger("aiohttp.server")


class ServerLog:
    """aiohttp's server logger, counting the requests it refuses into ``counts``."""

    def __init__(self, counts: Counter[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.counts = counts
        self._log_now = Every(LOG_EVERY_S, clock)

    def debug(self, msg: str, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError):  # aiohttp's own: not HTTP at all (debug only)
            self.counts["rejected_malformed"] += 1
        log.debug(msg, *args, **kw)

    def exception(self, msg: str, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if not isinstance(exc, HttpProcessingError):  # a handler's bug: the whole story
            log.exception(msg, *args, **kw)
            return
        self.counts["rejected_malformed"] += 1
        if self._log_now():
            log.warning(
                "HTTP: refused a request that could not be read (%s: %s); each one is counted in "
                'jouletrace_tap_events_total{jouletrace_tap="http_api",outcome="rejected_malformed"}',
                type(exc).__name__,
                " ".join(str(exc.message).split())[:200],
            )
