"""The proxy's loop: uvloop when installed (the sidecar extra has it), asyncio's when it is not."""

from __future__ import annotations

import asyncio
import sys

import pytest

from sidecar.proxy.loop import loop_factory, loop_name, run


def _name_of_running_loop() -> str:
    names: list[str] = []

    async def main() -> None:
        names.append(loop_name(asyncio.get_running_loop()))

    run(main())
    return names[0]


def test_the_proxy_runs_on_uvloop_when_it_is_installed() -> None:
    pytest.importorskip("uvloop")
    assert _name_of_running_loop() == "uvloop"


def test_without_uvloop_the_proxy_runs_on_asyncios_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert loop_factory() is asyncio.new_event_loop
    assert _name_of_running_loop() == "asyncio"
