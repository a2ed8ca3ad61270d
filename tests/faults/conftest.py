"""Shared by the fault-matrix tests: the tiny Llama for the real-vLLM faults, a /healthz watcher."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    from servers.models.cli import default_dir
    from servers.models.llm import build_llama

    return build_llama(default_dir("llama"))


class HealthWatch:
    """GETs ``url`` every ``interval_s`` on a thread; keeps every answer that was not a 200 within
    ``timeout_s`` (Kubernetes' default probe timeout is 1 s; a busy 2-core test machine needs more)."""

    def __init__(self, url: str, interval_s: float = 0.25, timeout_s: float = 5.0) -> None:
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.slowest_s = 0.0
        self.checks = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout_s) as resp:
                    if resp.status != 200:
                        self.failures.append(f"{t0:.1f}: {resp.status}")
            except (OSError, urllib.error.HTTPError) as err:
                self.failures.append(f"{t0:.1f}: {err}")
            self.slowest_s = max(self.slowest_s, time.monotonic() - t0)
            self.checks += 1
            self._stop.wait(self.interval_s)
