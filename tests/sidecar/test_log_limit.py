"""Log lines a client or a downstream can cause: at most one a minute, saying how many were held."""

from __future__ import annotations

import logging

from sidecar.log_limit import Every, OncePerMinute
from tests.support import FakeClock


def test_every_says_true_once_per_period_and_counts_the_calls_it_held() -> None:
    clock = FakeClock(100.0)
    gate = Every(60.0, clock)
    assert gate() and not gate() and not gate() and gate.held == 2
    clock.t_s += 59.9
    assert not gate()
    clock.t_s += 0.1
    assert gate() and gate.held == 0


def test_a_logger_with_the_filter_logs_one_line_a_minute_and_then_says_how_many_it_held() -> None:
    clock = FakeClock(0.0)
    logger = logging.getLogger("tests.log_limit.sdk")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    logger.addFilter(OncePerMinute(clock))
    OncePerMinute.on(logger)  # one is there already: no second
    try:
        for k in range(5):
            logger.warning("export %d failed", k)
        clock.t_s += 60.0
        logger.warning("export %d failed", 5)
    finally:
        logger.removeHandler(handler)
        for f in list(logger.filters):
            logger.removeFilter(f)
    assert seen == ["export 0 failed", "export 5 failed (4 lines like it held back in the last minute)"]
