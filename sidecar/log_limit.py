"""Log lines a client or a downstream can cause, at most one a minute (each one counted elsewhere).

:class:`Every` says whether a line may be logged now; :class:`OncePerMinute` is a
``logging.Filter`` built on it, for a library's logger the sidecar does not write itself (the
OTel exporter logs every failed attempt while a downstream is down: tens of thousands of lines
a day). What a line stands for is counted by the caller (a self-metric), so nothing is lost by
keeping the log short.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["EVERY_S", "Every", "OncePerMinute"]

EVERY_S = 60.0


class Every:
    """True at most once every ``every_s`` seconds (the first call: True)."""

    def __init__(self, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._at = -float("inf")
        self.held = 0  # calls answered False since the last True

    def __call__(self) -> bool:
        now = self._clock()
        if now - self._at < self.every_s:
            self.held += 1
            return False
        self._at, self.held = now, 0
        return True


class OncePerMinute(logging.Filter):
    """Lets a logger's records through at most once a minute; says how many it held back."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._gate = Every(EVERY_S, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        held = self._gate.held
        if not self._gate():
            return False
        if held:
            record.msg = f"{record.msg} ({held} lines like it held back in the last minute)"
        return True

    @staticmethod
    def on(logger: logging.Logger) -> None:
        """Put one on ``logger`` (once: a second call adds none)."""
        if not any(isinstance(f, OncePerMinute) for f in logger.filters):
            logger.addFilter(OncePerMinute())
