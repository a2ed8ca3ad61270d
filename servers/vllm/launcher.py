"""Start vLLM with jouletrace attached: tracing, the scheduler hook and the plugin on, request ids echoed.

:func:`serve_command` and :func:`serve_env` build the command line and
environment; :class:`Process` runs one child with its output in a log file
and stops it by its pid (SIGTERM, then SIGKILL). vLLM runs from its own
environment (``.venv-vllm``, or ``$JOULETRACE_VLLM_PYTHON``).

What is set, and why:

* ``--otlp-traces-endpoint`` -> the sidecar's OTLP receiver: one ``llm_request``
  span per request (the span tap);
* ``--enable-request-id-headers``: vLLM echoes ``X-Request-Id``; a client that
  sends one can look its energy up by it (``docs/vllm.md``);
* ``--scheduler-cls servers.vllm.scheduler_hook.JouletraceScheduler`` (unless
  turned off, or the arguments name another scheduler): every engine step's
  exact members to the sidecar (``JOULETRACE_HOOK_HOST/PORT``);
* ``PYTHONPATH`` starts with this checkout, so vLLM loads the hook and the
  plugin from the same code as the sidecar that receives them;
* ``OTEL_BSP_SCHEDULE_DELAY=100`` (ms): vLLM's span processor batches for 5 s
  by default; spans must reach the sidecar before the request's record is
  final (``settle_s``), or the client's task joins too late;
* ``OTEL_EXPORTER_OTLP_TRACES_INSECURE=true``: plain gRPC to the local sidecar;
* ``JOULETRACE_PLUGIN_HOST/PORT``: where the stat-logger plugin sends its
  datagrams (the plugin is loaded by vLLM from the entry point group
  ``vllm.stat_logger_plugins``: there is no flag; ``VLLM_PLUGINS``, if set,
  must name ``jouletrace``);
* ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB) unless set: the CPU build's default
  reserves far more memory than a tiny model needs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from servers.ports import free_port
from sidecar.contracts.ports import HOOK_PORT, LLM_SERVER_PORT, OTLP_PORT, PLUGIN_PORT

__all__ = [
    "REPO",
    "SCHEDULER_HOOK",
    "Process",
    "free_port",
    "serve_command",
    "serve_env",
    "vllm_python",
    "wait_http",
]

REPO = Path(__file__).resolve().parents[2]
SCHEDULER_HOOK = "servers.vllm.scheduler_hook.JouletraceScheduler"
VLLM_CLI = Path(__file__).resolve().with_name("vllm_cli.py")
# after SIGKILL: it cannot be refused, only delayed; the kernel ends the process once it gets the
# CPU (a starved CI machine took over 5 s, 2026-12-04)
_KILLED_WAIT_S = 30.0


def vllm_python() -> Path:
    """vLLM's interpreter: ``$JOULETRACE_VLLM_PYTHON`` or ``<repo>/.venv-vllm/bin/python``."""
    return Path(os.environ.get("JOULETRACE_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))


def serve_command(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = LLM_SERVER_PORT,
    otlp_endpoint: str | None = f"localhost:{OTLP_PORT}",
    scheduler_hook: bool = True,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``vllm serve`` command line (through the CPU-safe wrapper)."""
    cmd = [str(vllm_python()), str(VLLM_CLI), "serve", model, "--host", host, "--port", str(port)]
    cmd.append("--enable-request-id-headers")
    if otlp_endpoint:
        cmd += ["--otlp-traces-endpoint", otlp_endpoint]
    if scheduler_hook and not any(a.split("=")[0] == "--scheduler-cls" for a in extra):
        cmd += ["--scheduler-cls", SCHEDULER_HOOK]
    return cmd + list(extra)


def serve_env(
    *,
    plugin_host: str = "127.0.0.1",
    plugin_port: int = PLUGIN_PORT,
    hook_port: int = HOOK_PORT,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """vLLM's environment: tracing, plugin and hook addresses, this checkout first, CPU KV cache size."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["JOULETRACE_HOOK_HOST"] = plugin_host
    env["JOULETRACE_HOOK_PORT"] = str(hook_port)
    env.setdefault("OTEL_BSP_SCHEDULE_DELAY", "100")
    env.setdefault("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env["JOULETRACE_PLUGIN_HOST"] = plugin_host
    env["JOULETRACE_PLUGIN_PORT"] = str(plugin_port)
    return env


def wait_http(url: str, timeout_s: float, proc: Process | None = None) -> float:
    """Wait until ``url`` answers 200; returns the seconds waited. Raises if ``proc`` dies first."""
    t0 = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.poll()} while starting; log: {proc.log_path}")
        try:
            with urllib.request.urlopen(url, timeout=2.0) as resp:
                if resp.status == 200:
                    return time.monotonic() - t0
        except OSError:
            pass
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s")
        time.sleep(0.25)


class Process:
    """One child process, output to ``log_path``; stopped by its own pid."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        *,
        new_session: bool = False,
    ):
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log_path.open("wb")
        self.popen = subprocess.Popen(
            list(cmd),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env else None,
            cwd=REPO,
            start_new_session=new_session,  # its own process group: kill_group() ends its children too
        )
        self.new_session = new_session

    def poll(self) -> int | None:
        return self.popen.poll()

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._kill(f"did not stop within {timeout_s:.0f} s of SIGTERM")
        self._log.close()
        return int(self.popen.returncode)

    def kill_group(self) -> None:
        """SIGKILL the process and (when started with ``new_session``) every process of its group."""
        self._kill("was killed with its group")
        self._log.close()

    def _kill(self, why: str) -> None:
        """SIGKILL (its group too when started with ``new_session``); RuntimeError, with the log's
        tail and ``why``, if it is still there after :data:`_KILLED_WAIT_S`."""
        if self.new_session:
            with contextlib.suppress(ProcessLookupError):  # all of it may be gone already
                os.killpg(self.popen.pid, signal.SIGKILL)
        else:
            self.popen.kill()
        try:
            self.popen.wait(_KILLED_WAIT_S)
        except subprocess.TimeoutExpired as exc:
            still = f"still there {_KILLED_WAIT_S:.0f} s after SIGKILL"
            raise RuntimeError(f"pid {self.popen.pid} {why}; {still}; its log:\n{self.tail()}") from exc

    def tail(self, lines: int = 40) -> str:
        """The last lines of the log (for error messages)."""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def sidecar_command(args: Sequence[str]) -> list[str]:
    """The sidecar as a process of this interpreter (``python -m sidecar.cli sidecar ...``)."""
    return [sys.executable, "-m", "sidecar.cli", "sidecar", *args]
