"""The root of jouletrace's exceptions, shared by the sidecar and the load generator.

``jouletrace`` prints any :class:`JouletraceError` as one line and exits 2, so
its message must read as the fix. The sidecar's tree is in :mod:`sidecar.errors`,
the load generator's in :mod:`loadgen.errors`.
"""

from __future__ import annotations

__all__ = ["JouletraceError"]


class JouletraceError(Exception):
    """Base of every error jouletrace raises on purpose."""
