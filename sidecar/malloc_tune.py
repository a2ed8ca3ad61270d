"""glibc malloc settings for a long-running sidecar: big buffers get their own mapping, given back on free.

glibc serves an allocation of ``M_MMAP_THRESHOLD`` bytes or more (128 KiB at start) with its own
``mmap``, returned to the kernel when freed; but each time such a block is freed it *raises*
the threshold to that block's size (up to 32 MiB), so after a while OTLP exports (a 512-span
export is about 300 KiB of bytes) and NumPy work arrays come from the heap instead, where
a freed block stays in the process unless nothing above it is live. Under a span flood that
retained 95 MB of freed heap at rest (``benchmarks/memory.py --heap``: "malloc free, retained").
Setting the thresholds once fixes them (no more raising): blocks from 64 KiB up are mapped on
their own, and free memory at the heap's top beyond 128 KiB is trimmed.

:func:`trim` gives freed heap back now (``malloc_trim``): the OTLP receiver's memory limit
(:mod:`sidecar.taps.otlp_limit`) does it before it refuses an export for memory.

Only where the C library is glibc (``mallopt`` exists) and the operator has not chosen the
settings already (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, or ``glibc.malloc``
tunables in ``GLIBC_TUNABLES``, which glibc itself reads at start).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MMAP_THRESHOLD_BYTES",
    "TRIM_EVERY_S",
    "TRIM_THRESHOLD_BYTES",
    "PeriodicTrim",
    "trim",
    "tune_malloc",
]

log = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 64 * 1024
TRIM_THRESHOLD_BYTES = 128 * 1024
# The sidecar gives freed heap back this often: glibc keeps what is not at the heap's top (40 MB
# after a span flood, benchmarks/memory.py --heap); malloc_trim took under 1 ms on a 100 MB heap.
TRIM_EVERY_S = 2.0
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_OPERATOR_SET = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def tune_malloc(env: Mapping[str, str] = os.environ) -> bool:
    """Fix glibc's mmap and trim thresholds; False where not glibc or the operator set them."""
    if any(name in env for name in _OPERATOR_SET) or "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return False
    mallopt = _libc("mallopt", (ctypes.c_int, ctypes.c_int))
    if mallopt is None:  # not glibc (macOS has no mallopt)
        return False
    done: bool = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    done = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and done
    if not done:
        log.debug("mallopt refused the thresholds (not glibc?)")
    return done


def trim() -> bool:
    """Give the freed memory glibc keeps in its heaps back to the kernel (``malloc_trim(0)``: every
    arena, free pages inside the heap too); True if some was. False where not glibc. ctypes lets go
    of the GIL for the call, so Python threads go on meanwhile."""
    malloc_trim = _libc("malloc_trim", (ctypes.c_size_t,))
    return malloc_trim is not None and bool(malloc_trim(0))


@functools.cache
def _libc(name: str, argtypes: tuple[type[Any], ...]) -> Any:
    """The C library's function ``name`` returning an int, looked up once (the trim runs every 2 s
    and from gRPC threads); None where the C library has none (not glibc)."""
    try:
        fn = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return fn


class PeriodicTrim:
    """:func:`trim` at most every ``period_s``: call it with the time from a periodic job."""

    def __init__(self, period_s: float, now_s: float) -> None:
        self.period_s, self._last_s = period_s, now_s

    def __call__(self, now_s: float) -> None:
        if now_s - self._last_s >= self.period_s:
            self._last_s = now_s
            trim()
