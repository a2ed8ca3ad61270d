"""One sidecar per ledger file: an exclusive lock beside it, held while the sidecar runs.

Two sidecars on one ledger file (two pods given one volume) each write their records, and
the second one's stop replaces the open requests the first stored (``provisional``): the
first's in-flight requests were lost after its restart, without a word. The sidecar takes an
exclusive ``flock`` on ``<ledger_path>.lock`` when it opens its ledger, and a second one is
refused at start (exit 2, naming ``ledger_path`` and the process that holds it). The lock goes
with the process (a ``kill -9`` releases it too), so a stale lock file never blocks a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from sidecar.errors import ConfigError

__all__ = ["LedgerLock"]


class LedgerLock:
    """An exclusive lock on ``<path>.lock`` (this process's pid written in it), until :meth:`release`."""

    def __init__(self, path: str) -> None:
        self.path = f"{path}.lock"
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ConfigError(
                f"ledger_path: cannot create the lock file {self.path!r} beside the ledger ({err.strerror}); "
                "point ledger_path at a writable directory (or '' to keep no ledger)"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_pid(fd)
            os.close(fd)
            raise ConfigError(
                f"ledger_path: {path!r} is in use by another jouletrace sidecar ({holder} holds "
                f"{self.path!r}); give each sidecar its own ledger_path"
            ) from err
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    def release(self) -> None:
        """Let the file go (idempotent); closing the descriptor releases the lock."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _read_pid(fd: int) -> str:
    """Who holds the lock, as its file says ("process <pid>"), or "another process"."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip())
        return f"process {pid}"
    return "another process"
