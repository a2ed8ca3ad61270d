"""Highest request rate the loadgen sustains with arrival-time error p99 <= 1 ms, next to vllm bench serve.

Setup: the fast fake OpenAI server (``tests/loadgen/fake_server.py``) in its own
process, streaming 2 tokens per chat request with no delay; the client under test in
another process. Both tools get the same schedule shape: constant-rate arrivals
(``constant:RATE``; ``--burstiness inf`` for vllm bench), streaming chat
completions, ``ignore_eos``.

Arrival-time error is computed the same way for both tools from the time each
request was sent (``time.perf_counter``: the loadgen's ``sent_s``, vllm bench's saved
``start_times``): request k's send time is compared with the schedule ``t_0 + k / rate``,
``t_0`` chosen so the least-late request is on time; error = lateness. The arrival at
the server (same clock: CLOCK_MONOTONIC is shared by processes) is printed next to it.
A rate passes when the best of ``--repeats`` trials of ``--trial-s`` seconds (at least
200 requests) has p99 <= 1 ms. The search doubles the rate until a rate fails, then
bisects.

    .venv/bin/python benchmarks/loadgen_rate.py [--trial-s 2] [--no-vllm]

Last line: ``loadgen N req/s | vllm-bench M req/s | ratio N/M`` (``vllm-bench n/a`` when
``.venv-vllm`` is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import numpy as np

from loadgen.arrivals import constant
from loadgen.config import RunConfig
from loadgen.records import Request, Result
from loadgen.runner import _dispatch
from loadgen.tracing import ClientTracer
from servers.ports import free_port

REPO = Path(__file__).resolve().parents[1]
VLLM_PY = REPO / ".venv-vllm" / "bin" / "python"
LIMIT_MS = 1.0


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _reset(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{url}/_reset", method="POST"), timeout=10).read()


def lateness_p99_ms(times: list[float] | np.ndarray, n: int, rate: float) -> float:
    """p99 lateness (ms) of ``n`` send/arrival times vs ``t_0 + k / rate`` (least-late request on time)."""
    t = np.sort(np.asarray(times, dtype=np.float64))[-n:]
    if len(t) < n:
        return float("inf")
    late = t - np.arange(n) / rate
    late -= late.min()
    return float(np.percentile(late, 99) * 1000)


def server_error_ms(url: str, n: int, rate: float) -> float:
    """p99 lateness (ms) of the last ``n`` arrivals the server saw."""
    return lateness_p99_ms(_get(f"{url}/_arrivals")["t"], n, rate)  # type: ignore[index]


def loadgen_trial(url: str, rate: float, n: int) -> tuple[float, float]:
    """(client-side, server-side) p99 lateness in ms for the loadgen at ``rate``."""
    _reset(url)
    body = {"model": "fake-llm", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 2,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    results = [
        Result(Request(f"b-{i}", "lm-arena-chat", "chat", "/v1/chat/completions", dict(body)), 0.0)
        for i in range(n)
    ]
    cfg = RunConfig(timeout_s=30)

    t0 = time.perf_counter()

    async def go() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await _dispatch(session, results, constant(n, rate), {"chat": url}, t0,
                            ClientTracer(None), cfg, lambda: None)  # fmt: skip

    asyncio.run(go())
    if any(not r.ok for r in results):
        return float("inf"), float("inf")
    client = lateness_p99_ms([t0 + r.sent_s for r in results], n, rate)
    return client, server_error_ms(url, n, rate)


def vllm_trial(url: str, rate: float, n: int, tokenizer: str, out_dir: Path) -> tuple[float, float]:
    """(client-side, server-side) p99 lateness in ms for ``vllm bench serve`` at ``rate``.

    Client side: vllm bench's own ``start_times`` (``time.perf_counter`` when each request
    was sent, saved with ``--save-detailed``).
    """
    _reset(url)
    cmd = [
        str(VLLM_PY), str(REPO / "servers" / "vllm" / "vllm_cli.py"), "bench", "serve",
        "--backend", "openai-chat", "--base-url", url, "--endpoint", "/v1/chat/completions",
        "--model", "fake-llm", "--tokenizer", tokenizer, "--dataset-name", "random",
        "--random-input-len", "8", "--random-output-len", "2", "--ignore-eos", "--num-prompts", str(n),
        "--request-rate", str(rate), "--burstiness", "inf", "--disable-tqdm", "--seed", "0",
        "--ready-check-timeout-sec", "0", "--save-result", "--save-detailed",
        "--result-dir", str(out_dir), "--result-filename", "bench.json",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed: {out.stderr[-2000:]}")
    data = json.loads((out_dir / "bench.json").read_text())
    if data.get("failed"):
        return float("inf"), float("inf")
    return lateness_p99_ms(data["start_times"], n, rate), server_error_ms(url, n, rate)


def search(
    trial: Callable[[float, int], tuple[float, float]], trial_s: float, name: str, start: float, repeats: int
) -> float:
    """Highest passing rate: double from ``start`` until a failure, then bisect 4 times.

    A rate passes when the best of ``repeats`` trials has client-side p99 <= 1 ms (the
    machine may be shared: a trial that another process preempted says nothing about
    the tool).
    """

    def ok(rate: float) -> bool:
        n = max(200, int(rate * trial_s))
        best = float("inf")
        for _ in range(repeats):
            client, server = trial(rate, n)
            print(f"{name:10} {rate:9.1f} req/s  n={n:6d}  client p99 {client:8.3f} ms  "
                  f"server p99 {server:8.3f} ms", flush=True)  # fmt: skip
            best = min(best, client)
            if best <= LIMIT_MS:
                return True
        return False

    lo, hi = 0.0, start
    while ok(hi):
        lo, hi = hi, hi * 2
        if hi > 100_000:
            return lo
    for _ in range(4):
        mid = (lo + hi) / 2 if lo > 0 else hi / 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
        if lo == 0 and hi < 1:
            break
    return lo


@contextmanager
def fake_server() -> Iterator[str]:
    """The fast fake OpenAI server in its own process for the block; yields its base URL once it listens."""
    port = free_port()
    cmd = [sys.executable, "-m", "tests.loadgen.fake_server", "--port", str(port)]
    server = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        server.stdout.readline()  # its URL, once it listens
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trial-s", type=float, default=2.0, help="seconds of arrivals per trial")
    ap.add_argument("--start", type=float, default=200.0, help="first rate tried, req/s")
    ap.add_argument("--repeats", type=int, default=3, help="trials per rate; the best counts")
    ap.add_argument("--no-vllm", action="store_true", help="skip vllm bench serve")
    args = ap.parse_args()
    with fake_server() as url:
        ours = search(
            lambda r, n: loadgen_trial(url, r, n), args.trial_s, "loadgen", args.start, args.repeats
        )
        theirs: float | None = None
        if not args.no_vllm and VLLM_PY.exists():
            from servers.models.cli import default_dir
            from servers.models.llm import build_llama

            tokenizer = str(build_llama(default_dir("llama")))
            with tempfile.TemporaryDirectory() as tmp:
                theirs = search(lambda r, n: vllm_trial(url, r, n, tokenizer, Path(tmp)),
                                args.trial_s, "vllm-bench", args.start, args.repeats)  # fmt: skip
    if theirs is not None and theirs > 0:
        print(f"loadgen {ours:.0f} req/s | vllm-bench {theirs:.0f} req/s | ratio {ours / theirs:.2f}")
    else:
        why = "not run" if args.no_vllm else (f"{VLLM_PY} missing" if theirs is None else "no passing rate")
        print(f"loadgen {ours:.0f} req/s | vllm-bench n/a ({why}) | ratio n/a")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
