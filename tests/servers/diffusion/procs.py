"""Real processes for the diffusion tests: free ports, JSON over HTTP, start/stop with logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]


def http(
    method: str, url: str, body: Any = None, timeout_s: float = 60.0, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    """(status, parsed JSON or text, lower-case headers) of one request; HTTP errors are returned."""
    data = None if body is None else json.dumps(body).encode()
    sent = {"content-type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            raw, status, headers = resp.read(), resp.status, {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as err:
        raw, status, headers = err.read(), err.code, {k.lower(): v for k, v in err.headers.items()}
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text), headers
    except json.JSONDecodeError:
        return status, text, headers


def start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``python argv`` with output to ``log``; JOULETRACE_* from the caller's shell are dropped."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("JOULETRACE_")}
    env = {**base, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, *argv], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_sidecar(otlp_port: int, port: int, settle_s: float, log: Path) -> subprocess.Popen[bytes]:
    """The sidecar for a diffusion test: cpu-model meter, local ports, no ledger, model name ``tiny``.

    The server announces each pipeline call as it begins, so ``settle_s`` need not outlast a batch.
    No vLLM here: its plugin's and scheduler hook's UDP receivers stay off (their fixed ports would
    collide with other sidecars on the machine).
    """
    argv = ["-m", "sidecar.cli", "sidecar", "--meter", "cpu-model", "--host", "127.0.0.1"]
    argv += ["--otlp-port", str(otlp_port), "--port", str(port), "--ledger-path", ""]
    argv += ["--settle-s", f"{settle_s:g}", "--fit-warmup-ticks", "25", "--model", "tiny"]
    return start(argv, log, env={"JOULETRACE_PLUGIN_PORT": "0", "JOULETRACE_HOOK_PORT": "0"})


def final_record(sidecar_url: str, request_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """The sidecar's record of ``request_id`` once final; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    status, body = 0, None
    while time.monotonic() < deadline:
        status, body, _ = http("GET", f"{sidecar_url}/v1/requests/{request_id}")
        if status == 200 and body.get("final"):
            return dict(body)
        time.sleep(0.25)
    raise AssertionError(f"no final record for {request_id}: {status} {body}")
