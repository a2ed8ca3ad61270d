"""The proxy's event loop: uvloop where it is installed (the ``sidecar`` extra has it), else asyncio's.

uvloop runs the loop, the transports and the timers in C (libuv): on the proxy's
hot path (a chunk in, timed, out) that is the loop's own bookkeeping per chunk
(handles, futures, the transport's write); what that saves under
benchmarks/proxy_overhead.py is in docs/proxy.md. Without
uvloop (a platform it has no wheel for, an install without the extra) the proxy
runs on asyncio's loop, with the same behaviour, only slower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["loop_factory", "loop_name", "run"]


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's ``new_event_loop`` if it imports, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: which loop runs the proxy (logged at start)."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run(main)`` on the loop :func:`loop_factory` gives."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main)
