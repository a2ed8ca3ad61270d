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

Cores: with ``--pin`` the three processes are pinned (``os.sched_setaffinity``) so they
do not fight for one core: the proxy process gets the last CPU this run may use, the
fake server the one before it and the client the first (on 2 CPUs the fake server and
the client share the first: they do in both modes, so the pair's difference is the
proxy's). On one CPU nothing is pinned. It is not the default: on the 2-core
development machine shared with other jobs (load average 3 to 5), pinned runs added
more TTFT than unpinned ones (median pairs p50 2.84 and 0.83 ms, p99 5.50 and 100.63 ms
pinned; 0.44 and 1.14 ms, -2.11 and 3.26 ms unpinned, two runs each of ``--rounds 3``):
a pinned process cannot move off a core another job is busy on. The first line says
what was pinned where.

A warm-up pair of rounds of the same shape first (connection pools filled, the energy
model's first fit done; printed, not in the figures), then
``--rounds`` pairs of rounds, direct then proxied, the same requests each time. Per stream
the client notes the time to the first content chunk (TTFT) and to the last byte. Per pair,
the proxy's added latency is proxied minus direct TTFT at p50 and at p99; the figures
reported are the medians over the pairs (paired, so the drift of a shared machine's load
cancels as far as it can). The CPU time the proxy process and the fake server use during
the proxied rounds is printed per stream: unlike latency, it does not depend much on
how busy the machine is. The proxy process's CPU rate during the direct rounds (the sidecar
idling: meter, ticks, no streams) times the proxied rounds' duration is its idle
baseline, printed apart from what the streams cost.

``--bare`` (a diagnosis, not the figure): the proxy tap alone in its process, with fixed
prices and drained every 100 ms as a tick would, without the sidecar's meter and
attribution, to tell the proxy's own cost from that of the sidecar it shares a
process with.

    .venv/bin/python benchmarks/proxy_overhead.py [--streams 200] [--rounds 5] [--pin] [--bare]

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
    """User + system CPU seconds a process has used, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1e3


def _pin(fake_pid: int, proxy_pid: int) -> str:
    """Proxy on the last CPU, fake server on the one before (or the first), client on the first."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return f"not pinned (one CPU: {cpus})"
    proxy_cpu, client_cpu = cpus[-1], cpus[0]
    fake_cpu = cpus[-2] if len(cpus) >= 3 else client_cpu
    # the sidecar's threads (poller, proxy) start after this: they inherit the process's affinity
    for pid, cpu in ((proxy_pid, proxy_cpu), (fake_pid, fake_cpu), (os.getpid(), client_cpu)):
        os.sched_setaffinity(pid, {cpu})
    return f"pinned: proxy process CPU {proxy_cpu}, fake server CPU {fake_cpu}, client CPU {client_cpu}"


# --bare: the proxy tap alone, fixed prices, drained every 100 ms as a tick would, no sidecar
BARE = """
import sys, time
from sidecar.proxy.energy import Prices
from sidecar.proxy.tap import ProxyTap
prices = Prices("estimate", True, floor_w=10.0, j_per_step=0.5, j_per_decode_token=0.1, r2=0.75)
tap = ProxyTap(sys.argv[1], prices=lambda: prices, record_base=lambda h: "http://x", port=int(sys.argv[2]))
tap.start()
while True:
    time.sleep(0.1)
    tap.due(time.monotonic())
"""


def _processes(
    tmp: Path, fake_port: int, proxy_port: int, api_port: int, args: argparse.Namespace
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    py, fake_url = sys.executable, f"http://127.0.0.1:{fake_port}"
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
    if args.bare:
        return fake, _start([py, "-c", BARE, fake_url, str(proxy_port)], tmp / "proxy.log")
    knobs = {
        "--proxy-port": str(proxy_port),
        "--port": str(api_port),
        "--host": "127.0.0.1",
        "--otlp-port": "0",
        "--plugin-port": "0",
        "--hook-port": "0",
        "--meter": "cpu-model",
        "--ledger-path": "",
        "--log-level": "warning",
    }
    cmd = [py, "-m", "sidecar.cli", "proxy", "--upstream", fake_url]
    proxy = _start(cmd + [x for kv in knobs.items() for x in kv], tmp / "proxy.log")
    return fake, proxy


def _tap_counters(api_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=10) as resp:
        lines = [ln for ln in resp.read().decode().splitlines() if 'jouletrace_tap="proxy"' in ln]
    return "; ".join(
        ln.split("{")[0] + " " + ln.split('outcome="')[1].split('"')[0] + "=" + ln.rsplit(" ", 1)[1]
        for ln in lines
    )


class _Run:
    """The paired rounds and what they measured."""

    def __init__(self, args: argparse.Namespace, urls: dict[str, str], pids: dict[str, int]) -> None:
        self.args, self.urls, self.pids = args, urls, pids
        self.results: dict[str, list[tuple[float, float]]] = {"direct": [], "proxy": []}
        self.added: list[tuple[float, float]] = []
        self.cpu_s = {"fake": 0.0, "proxy": 0.0, "proxy idle": 0.0}
        self.wall_s = {"direct": 0.0, "proxy": 0.0}

    def pair(self, label: str, keep: bool = True) -> None:
        a = self.args
        p: dict[str, tuple[float, float]] = {}
        for mode in ("direct", "proxy"):
            before = {name: _cpu_s(pid) for name, pid in self.pids.items()}
            t0 = time.monotonic()
            got = asyncio.run(_round(self.urls[mode], a.streams, a.max_tokens, a.ramp_s))
            wall_s = time.monotonic() - t0
            used = {name: _cpu_s(pid) - before[name] for name, pid in self.pids.items()}
            ttft = [g[0] for g in got]
            p[mode] = (_pct(ttft, 50), _pct(ttft, 99))
            print(f"{label} {mode:6s} TTFT p50 {p[mode][0]:7.2f} ms  p99 {p[mode][1]:7.2f} ms")
            if not keep:
                continue
            self.results[mode] += got
            self.wall_s[mode] += wall_s
            if mode == "proxy":
                self.cpu_s["fake"] += used["fake"]
                self.cpu_s["proxy"] += used["proxy"]
            else:
                self.cpu_s["proxy idle"] += used["proxy"]
        if keep:
            self.added.append((p["proxy"][0] - p["direct"][0], p["proxy"][1] - p["direct"][1]))

    def report(self) -> None:
        a, res = self.args, self.results
        for what, k in (("last byte", 1), ("TTFT     ", 0)):
            d, q = [x[k] for x in res["direct"]], [x[k] for x in res["proxy"]]
            print(
                f"{what} direct p50 {_pct(d, 50):.2f} ms p99 {_pct(d, 99):.2f} ms | "
                f"proxy p50 {_pct(q, 50):.2f} ms p99 {_pct(q, 99):.2f} ms"
            )
        n = a.streams * a.rounds
        # the sidecar's own CPU while no stream passes (meter, ticks), at the direct rounds' rate
        idle_s = self.cpu_s["proxy idle"] / max(self.wall_s["direct"], 1e-9) * self.wall_s["proxy"]
        print(
            f"CPU per proxied stream: proxy process {self.cpu_s['proxy'] / n * 1e3:.2f} ms, of which "
            f"the idle sidecar {idle_s / n * 1e3:.2f} ms (its CPU rate in the direct rounds, "
            f"{self.cpu_s['proxy idle'] / max(self.wall_s['direct'], 1e-9):.3f} s/s), the streams "
            f"{(self.cpu_s['proxy'] - idle_s) / n * 1e3:.2f} ms; "
            f"fake server {self.cpu_s['fake'] / n * 1e3:.2f} ms (the engine's own HTTP work, for scale)"
        )
        print("added per pair (p50, p99 ms):", ", ".join(f"({x:.2f}, {y:.2f})" for x, y in self.added))
        print(
            json.dumps(
                {
                    k: getattr(a, k)
                    for k in ("streams", "rounds", "max_tokens", "token_ms", "ramp_s", "pin", "bare")
                }
            )
        )
        added_p50 = float(np.median([x[0] for x in self.added]))
        added_p99 = float(np.median([x[1] for x in self.added]))
        print(f"proxy added p50 {added_p50:.2f} ms | p99 {added_p99:.2f} ms | streams {a.streams}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=200, help="concurrent streams per round")
    ap.add_argument("--rounds", type=int, default=5, help="pairs of rounds (direct, proxied)")
    ap.add_argument("--max-tokens", type=int, default=32, help="chunks per stream")
    ap.add_argument("--token-ms", type=float, default=50.0, help="fake server: ms between chunks")
    ap.add_argument("--ramp-s", type=float, default=1.0, help="streams start evenly over this (0: a burst)")
    ap.add_argument(
        "--pin", action="store_true", help="pin proxy, fake server and client to CPUs (see above)"
    )
    ap.add_argument(
        "--bare", action="store_true", help="the proxy tap alone, without the sidecar (see above)"
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    fake_port, proxy_port, api_port = free_port(), free_port(), free_port()
    urls = {"direct": f"http://127.0.0.1:{fake_port}", "proxy": f"http://127.0.0.1:{proxy_port}"}
    fake, proxy = _processes(tmp, fake_port, proxy_port, api_port, args)
    try:
        pinned = _pin(fake.pid, proxy.pid) if args.pin else "not pinned (--pin pins)"
        print(pinned, f"| load average {os.getloadavg()[0]:.1f}")
        wait_http(f"{urls['direct']}/v1/models", 30, fake, tmp / "fake.log")
        wait_http(f"{urls['proxy']}/v1/models", 60, proxy, tmp / "proxy.log")
        run = _Run(args, urls, {"fake": fake.pid, "proxy": proxy.pid})
        run.pair("warm-up", keep=False)
        for r in range(args.rounds):
            run.pair(f"round {r + 1}")
        counters = "(--bare: no sidecar)" if args.bare else _tap_counters(api_port)
        print("proxy tap counters:", counters, f"| load average {os.getloadavg()[0]:.1f}")
    finally:
        for proc in (proxy, fake):
            proc.terminate()
            proc.wait(timeout=15)
    run.report()


if __name__ == "__main__":
    main()
