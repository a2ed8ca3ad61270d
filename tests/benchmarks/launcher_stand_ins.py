"""Stand-ins for ``servers.vllm.launcher``'s process start and health wait, for the glue tests of the
benchmarks that start vLLM (``test_hook_overhead.py``, ``test_vllm_overhead.py``): what each process
was started with is kept, nothing is run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

__all__ = ["FakeProcess", "Launches"]


class FakeProcess:
    """Stands in for ``servers.vllm.launcher.Process``: keeps what it was started with."""

    def __init__(
        self, name: str, cmd: Sequence[str], log_path: Path, env: dict[str, str] | None, pid: int
    ) -> None:
        self.name, self.cmd, self.log_path, self.env = name, list(cmd), log_path, env or {}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.popen = SimpleNamespace(pid=pid)  # no process's: a stand-in's pid
        self.stopped = False

    def flag(self, name: str) -> str:
        """The value given after flag ``name`` on its command line."""
        return self.cmd[self.cmd.index(name) + 1]

    def poll(self) -> int | None:
        return None

    def stop(self, timeout_s: float = 20.0) -> int:
        self.stopped = True
        return 0


class Launches:
    """``process`` and ``wait_http`` as the launcher's, keeping the processes and the URLs waited on."""

    def __init__(self) -> None:
        self.procs: list[FakeProcess] = []
        self.waited: list[str] = []

    def process(
        self, name: str, cmd: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> FakeProcess:
        self.procs.append(FakeProcess(name, cmd, log_path, env, 100_000 + len(self.procs)))
        return self.procs[-1]

    def wait_http(self, url: str, timeout_s: float, proc: object = None) -> float:
        self.waited.append(url)
        return 0.0
