"""File descriptors: the soft limit raised to the hard one; a failed accept logged once a minute."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource

import pytest

from sidecar import fd_limit
from sidecar.fd_limit import quiet_accept_errors, raise_fd_limit


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = {"now": (1024, 20_000)}
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits["now"])
    monkeypatch.setattr(resource, "setrlimit", lambda which, value: limits.update(now=value))
    assert raise_fd_limit() == 20_000 and limits["now"] == (20_000, 20_000)
    limits["now"] = (1024, resource.RLIM_INFINITY)
    assert raise_fd_limit() == fd_limit.MOST  # an unlimited hard limit: a bound of our own


def test_a_limit_that_cannot_be_raised_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(which: int, value: tuple[int, int]) -> None:
        raise ValueError("not allowed here")

    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert raise_fd_limit() == 1024


def test_failed_accepts_are_logged_once_a_minute_and_other_loop_errors_as_before(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.new_event_loop()
    try:
        quiet_accept_errors(loop)
        out_of_fds = OSError(errno.EMFILE, "Too many open files")
        with caplog.at_level(logging.ERROR):
            for _ in range(1000):  # what asyncio's accept loop reports at the limit
                loop.call_exception_handler(
                    {"message": "socket.accept() out of system resource", "exception": out_of_fds}
                )
            loop.call_exception_handler({"message": "Task exception was never retrieved"})
    finally:
        loop.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "accepting a connection failed" in messages[0]
    assert messages[1].startswith("Task exception was never retrieved")
