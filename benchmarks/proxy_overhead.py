"""What the proxy adds to a stream: the same streams direct and through ``jouletrace proxy``.

Setup, all on this machine, in one run:

* the fast fake OpenAI server (``tests/loadgen/fake_server.py``) in its own process,
  streaming ``--max-tokens`` chunks ``--token-ms`` apart per request (no batch cap;
  defaults 32 chunks 50 ms apart, so each stream lasts about 1.6 s);
* ``jouletrace proxy --upstream <fake>`` in its own process: the whole sidecar as users
  run it (cpu-model meter, ticks, attribution), with the proxy tap on its own thread;
* the client in this process: ``--streams`` streaming chat completions (aiohttp) started
  evenly over ``--ramp-s`` (default 1 s, so all 200 are open at once at the peak; 0 sends
  them as one burst), each with ``stream_options.include_usage`` so the proxy adds the
  energy object.

A warm-up round at full concurrency per mode first (connection pools filled), then
``--rounds`` pairs of rounds, direct then proxied, the same requests each time. Per stream
the client notes the time to the first content chunk (TTFT) and to the last byte. Per pair,
the proxy's added latency is proxied minus direct TTFT at p50 and at p99; the figures
reported are the medians over the pairs (paired, so the drift of a shared machine's load
cancels as far as it can). The CPU time the proxy process and the fake server use during
the proxied rounds is printed per stream: unlike latency, it does not depend on how busy
the machine is.

    .venv/bin/python benchmarks/proxy_overhead.py [--streams 200] [--rounds 5]

Last line: ``proxy added p50 X ms | p99 Y ms | streams Z`` (TTFT; Z streams per round).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import free_port, wait_http  # noqa: E402


async def _one(session: aiohttp.ClientSession, url: str, max_tokens: int) -> tuple[float, float]:
    body = {
        "model": "fake-llm",
        "messages": [{"role": "user", "content": "how much energy did this take"}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft = None
    async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
        async for line in resp.content:
            if ttft is None and line.startswith(b"data: {") and b'"content"' in line:
                ttft = time.perf_counter() - t0
    if ttft is None:
        raise RuntimeError(f"no content chunk from {url}")
    return ttft, time.perf_counter() - t0


async def _later(
    delay_s: float, session: aiohttp.ClientSession, url: str, max_tokens: int
) -> tuple[float, float]:
    await asyncio.sleep(delay_s)
    return await _one(session, url, max_tokens)


async def _round(url: str, streams: int, max_tokens: int, ramp_s: float = 0.0) -> list[tuple[float, float]]:
    """``streams`` streams, started evenly over ``ramp_s`` seconds (0: all at once)."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        starts = [ramp_s * i / streams for i in range(streams)]
        return list(await asyncio.gather(*(_later(t, session, url, max_tokens) for t in starts)))


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=200, help="concurrent streams per round")
    ap.add_argument("--rounds", type=int, default=5, help="pairs of rounds (direct, proxied)")
    ap.add_argument("--max-tokens", type=int, default=32, help="chunks per stream")
    ap.add_argument("--token-ms", type=float, default=50.0, help="fake server: ms between chunks")
    ap.add_argument("--ramp-s", type=float, default=1.0, help="streams start evenly over this (0: a burst)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    fake_port, proxy_port, api_port = free_port(), free_port(), free_port()
    fake_url, proxy_url = f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{proxy_port}"
    py = sys.executable
    fake = _start(
        [
            py,
            "-m",
            "tests.loadgen.fake_server",
            "--port",
            str(fake_port),
            "--token-s",
            str(args.token_ms / 1e3),
        ],
        tmp / "fake.log",
    )
    proxy = _start(
        [
            py,
            "-m",
            "sidecar.cli",
            "proxy",
            "--upstream",
            fake_url,
            "--proxy-port",
            str(proxy_port),
            "--port",
            str(api_port),
            "--host",
            "127.0.0.1",
            "--otlp-port",
            "0",
            "--plugin-port",
            "0",
            "--hook-port",
            "0",
            "--meter",
            "cpu-model",
            "--ledger-path",
            "",
            "--log-level",
            "warning",
        ],
        tmp / "proxy.log",
    )
    try:
        wait_http(f"{fake_url}/v1/models", 30, fake, tmp / "fake.log")
        wait_http(f"{proxy_url}/v1/models", 60, proxy, tmp / "proxy.log")
        for url in (fake_url, proxy_url):  # warm both paths at full concurrency
            asyncio.run(_round(url, args.streams, 2))
        results: dict[str, list[tuple[float, float]]] = {"direct": [], "proxy": []}
        added: list[tuple[float, float]] = []
        cpu_s = {"fake": 0.0, "proxy": 0.0}
        for r in range(args.rounds):
            pair: dict[str, tuple[float, float]] = {}
            for mode, url in (("direct", fake_url), ("proxy", proxy_url)):
                before = {"fake": _cpu_s(fake.pid), "proxy": _cpu_s(proxy.pid)}
                got = asyncio.run(_round(url, args.streams, args.max_tokens, args.ramp_s))
                results[mode] += got
                if mode == "proxy":
                    for name, proc in (("fake", fake), ("proxy", proxy)):
                        cpu_s[name] += _cpu_s(proc.pid) - before[name]
                ttft = [g[0] for g in got]
                pair[mode] = (_pct(ttft, 50), _pct(ttft, 99))
                print(
                    f"round {r + 1} {mode:6s} TTFT p50 {pair[mode][0]:7.2f} ms  p99 {pair[mode][1]:7.2f} ms"
                )
            added.append((pair["proxy"][0] - pair["direct"][0], pair["proxy"][1] - pair["direct"][1]))
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=10) as resp:
            tap_lines = [ln for ln in resp.read().decode().splitlines() if 'jouletrace_tap="proxy"' in ln]
        print(
            "proxy tap counters:",
            "; ".join(
                ln.split("{")[0] + " " + ln.split('outcome="')[1].split('"')[0] + "=" + ln.rsplit(" ", 1)[1]
                for ln in tap_lines
            ),
        )
    finally:
        for proc in (proxy, fake):
            proc.terminate()
            proc.wait(timeout=15)
    d_ttft = [x[0] for x in results["direct"]]
    p_ttft = [x[0] for x in results["proxy"]]
    d_end = [x[1] for x in results["direct"]]
    p_end = [x[1] for x in results["proxy"]]
    print(
        f"last byte direct p50 {_pct(d_end, 50):.2f} ms p99 {_pct(d_end, 99):.2f} ms | "
        f"proxy p50 {_pct(p_end, 50):.2f} ms p99 {_pct(p_end, 99):.2f} ms"
    )
    print(
        f"TTFT      direct p50 {_pct(d_ttft, 50):.2f} ms p99 {_pct(d_ttft, 99):.2f} ms | "
        f"proxy p50 {_pct(p_ttft, 50):.2f} ms p99 {_pct(p_ttft, 99):.2f} ms"
    )
    added_p50 = float(np.median([a[0] for a in added]))
    added_p99 = float(np.median([a[1] for a in added]))
    n = args.streams * args.rounds
    print(
        f"CPU per proxied stream: proxy process {cpu_s['proxy'] / n * 1e3:.2f} ms, "
        f"fake server {cpu_s['fake'] / n * 1e3:.2f} ms (the engine's own HTTP work, for scale)"
    )
    print("added per pair (p50, p99 ms):", ", ".join(f"({a:.2f}, {b:.2f})" for a, b in added))
    print(
        json.dumps({k: getattr(args, k) for k in ("streams", "rounds", "max_tokens", "token_ms", "ramp_s")})
    )
    print(f"proxy added p50 {added_p50:.2f} ms | p99 {added_p99:.2f} ms | streams {args.streams}")


if __name__ == "__main__":
    main()
