"""File descriptors: the soft limit raised to the hard one, and an accept that fails for want of one
logged once a minute.

Every connection a client holds is a descriptor. The HTTP server bounds its own
(:mod:`sidecar.export.http_conns`), but the OTLP receiver's gRPC core accepts connections
without a cap, and many systems start a process with a soft limit of 1,024 under a far higher
hard one. With none left, asyncio's accept loop logged a traceback for every try (hundreds of
thousands of lines a minute, a core spent on it) while /healthz stopped answering (hostile
probe, round 4). So the sidecar raises its soft limit to the hard one at start (as Go programs
do since Go 1.19), and the event loop logs a failed accept at most once a minute (the rest are
counted in that line).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from sidecar.log_limit import Every

__all__ = ["MOST", "quiet_accept_errors", "raise_fd_limit"]

log = logging.getLogger(__name__)

MOST = 1 << 20  # the soft limit never goes above this (an unlimited hard limit included)


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (at most :data:`MOST`); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = MOST if hard == resource.RLIM_INFINITY else min(hard, MOST)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (OSError, ValueError) as err:  # a sandbox may forbid it: keep what there is
            log.debug("could not raise the open-file limit from %d to %d: %s", soft, want, err)
    return soft


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log the loop's failed accepts (no descriptor left) once a minute; anything else as before."""
    gate = Every()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "accept" not in str(context.get("message", "")):
            loop.default_exception_handler(context)
            return
        held = gate.held  # failures since the last line (gate() starts the count again)
        if gate():
            log.error(
                "accepting a connection failed (%s: %s), %d more since the last line; logged at most "
                "once a minute",
                context.get("message"),
                context.get("exception"),
                held,
            )

    loop.set_exception_handler(handle)
