"""The load generator's exceptions.

    JouletraceError (sidecar.contracts.errors)
    └── LoadgenError
        ├── InputError         a bad flag, task, mix, dataset or trace file (names file, line, field)
        └── UnreachableError   the server or sidecar does not answer before the run (names the URL)

``jouletrace`` prints these as one line and exits 2, so they must read as the fix.
"""

from __future__ import annotations

from sidecar.contracts.errors import JouletraceError

__all__ = ["InputError", "LoadgenError", "UnreachableError", "where"]


class LoadgenError(JouletraceError):
    """Base of the errors the load generator raises on purpose."""


class InputError(LoadgenError):
    """Bad user input; the message names the file, line and field where it can."""


class UnreachableError(LoadgenError):
    """A server the run needs did not answer; the message names its URL and the flag to fix it."""


def where(path: str, line: int | None, field: str | None) -> str:
    """``file:line: field 'x'`` prefix for input errors (line is 1-based)."""
    loc = path if line is None else f"{path}:{line}"
    return f"{loc}: field {field!r}" if field else loc
