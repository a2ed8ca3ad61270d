"""What the proxy adds to a stream: the same streams direct and through ``jouletrace proxy``.

Setup, all on this machine, in one run:

* the fast fake OpenAI server (``tests/loadgen/fake_server.py``) in its own process,
  streaming ``--max-tokens`` chunks ``--token-ms`` apart per request (no batch cap;
  defaults 32 chunks 50 ms apart, so each stream lasts about 1.6 s);
* ``jouletrace proxy --upstream <fake>`` in its own process, as users run it, beside
  ``jouletrace sidecar`` (cpu-model meter, ticks, attribution) in another: the proxy
  sends each request's timings to the sidecar (UDP) and fetches its prices from the
  sidecar's API, so the sidecar's cost is on the machine and its work is real (the
  counters printed at the end show the sidecar received every request);
  ``--in-process`` runs the proxy inside the sidecar instead
  (``jouletrace sidecar --proxy-upstream``), the layout before the proxy had a process
  of its own, for comparison;
* the client in this process: ``--streams`` streaming chat completions (aiohttp) started
  evenly over ``--ramp-s`` (default 1 s, so all 200 are open at once at the peak; 0 sends
  them as one burst), each with ``stream_options.include_usage`` so the proxy adds the
  energy object.

Cores: with ``--pin`` the processes are pinned (``os.sched_setaffinity``): the proxy gets
the last CPU this run may use, the fake server the one before it, the client and the
sidecar the first (on 2 CPUs the fake server shares the first too: it does in both modes,
so the pair's difference is the proxy's). On one CPU nothing is pinned. It is not the
default: on a shared machine a pinned process cannot move off a core another job is busy
on. The first line says what was pinned where.

A warm-up pair of rounds of the same shape first (connection pools filled, the energy
model's first fit done; printed, not in the figures), then ``--rounds`` pairs of rounds,
direct then proxied, the same requests each time. Per stream the client notes the time to
the first content chunk (TTFT) and to the last byte. Per pair, the proxy's added latency
is proxied minus direct TTFT at p50 and at p99; the figures reported are the medians over
the pairs (paired, so the drift of a shared machine's load cancels as far as it can).
The first line says which event loop the proxy runs on (uvloop where this interpreter has
it: the proxy is started with it). CPU per stream is printed for each process, in all and
above its idle rate (measured in a quiet window of 3 s after the warm-up has been sealed):
the proxy's over the proxied rounds; the sidecar's over all kept rounds (it seals a
proxied round's work ``settle_s`` late, during the next direct round), per proxied stream;
the fake server's per stream it served (it serves the direct rounds too). Unlike latency,
CPU does not depend much on how busy the machine is. The load averages (1, 5, 15 min) are
printed at the start and end.

    .venv/bin/python benchmarks/proxy_overhead.py [--streams 200] [--rounds 5] [--pin] [--in-process]
        [--profile out.svg]

``--profile`` samples the proxy's process with py-spy over the kept rounds (``.txt``: the
collapsed stacks).

Last line: ``proxy added p50 X ms | p99 Y ms | streams Z`` (TTFT; Z streams per round).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import socket
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


def _pin(pids: dict[str, int]) -> str:
    """Proxy on the last CPU, fake server on the one before (or the first), client and sidecar first."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return f"not pinned (one CPU: {cpus})"
    client_cpu = cpus[0]
    where = {"proxy": cpus[-1], "fake": cpus[-2] if len(cpus) >= 3 else client_cpu, "sidecar": client_cpu}
    # threads started later (the sidecar's poller, the in-process proxy) inherit the process's affinity
    for name, pid in pids.items():
        os.sched_setaffinity(pid, {where[name]})
    os.sched_setaffinity(0, {client_cpu})
    return "pinned: " + ", ".join(f"{n} CPU {where[n]}" for n in pids) + f", client CPU {client_cpu}"


SIDECAR_KNOBS = [
    *("--host", "127.0.0.1", "--otlp-port", "0", "--plugin-port", "0", "--hook-port", "0"),
    *("--meter", "cpu-model", "--ledger-path", "", "--log-level", "warning"),
]


def _processes(
    tmp: Path, ports: dict[str, int], args: argparse.Namespace
) -> dict[str, subprocess.Popen[bytes]]:
    py, fake_url = sys.executable, f"http://127.0.0.1:{ports['fake']}"
    fake = [py, "-m", "tests.loadgen.fake_server", "--port", str(ports["fake"])]
    procs = {"fake": _start([*fake, "--token-s", str(args.token_ms / 1000.0)], tmp / "fake.log")}
    sidecar = [py, "-m", "sidecar.cli", "sidecar", "--port", str(ports["api"]), *SIDECAR_KNOBS]
    if args.in_process:  # the proxy on a thread of the sidecar's process, as before it had its own
        sidecar += [
            "--proxy-upstream",
            fake_url,
            "--proxy-port",
            str(ports["proxy"]),
            "--proxy-wire-port",
            "0",
        ]
        procs["proxy"] = _start(sidecar, tmp / "sidecar.log")
        return procs
    procs["sidecar"] = _start([*sidecar, "--proxy-wire-port", str(ports["wire"])], tmp / "sidecar.log")
    proxy = [py, "-m", "sidecar.cli", "proxy", "--upstream", fake_url, "--proxy-port", str(ports["proxy"])]
    proxy += ["--sidecar", f"http://127.0.0.1:{ports['api']}", "--proxy-wire-port", str(ports["wire"])]
    procs["proxy"] = _start([*proxy, "--log-level", "warning"], tmp / "proxy.log")
    return procs


def _tap_counters(api_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=10) as resp:
        lines = [ln for ln in resp.read().decode().splitlines() if 'jouletrace_tap="proxy' in ln]
    return "; ".join(
        ln.split('jouletrace_tap="')[1].split('"')[0]
        + " "
        + ln.split('outcome="')[1].split('"')[0]
        + "="
        + ln.rsplit(" ", 1)[1].removesuffix(".0")
        for ln in lines
    )


class _Run:
    """The paired rounds and what they measured."""

    def __init__(self, args: argparse.Namespace, urls: dict[str, str], pids: dict[str, int]) -> None:
        self.args, self.urls, self.pids = args, urls, pids
        self.results: dict[str, list[tuple[float, float]]] = {"direct": [], "proxy": []}
        self.added: list[tuple[float, float]] = []
        self.cpu_s = {mode: dict.fromkeys(pids, 0.0) for mode in ("direct", "proxy")}
        self.wall_s = {"direct": 0.0, "proxy": 0.0}
        self.idle_rate = dict.fromkeys(pids, 0.0)

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
            for name, cpu_s in used.items():
                self.cpu_s[mode][name] += cpu_s
        if keep:
            self.added.append((p["proxy"][0] - p["direct"][0], p["proxy"][1] - p["direct"][1]))

    def idle(self, quiet_s: float = 3.0) -> None:
        """Each process's CPU rate with no traffic (after the warm-up has been sealed)."""
        time.sleep(self.args.settle_s)
        before = {name: _cpu_s(pid) for name, pid in self.pids.items()}
        time.sleep(quiet_s)
        self.idle_rate = {name: (_cpu_s(pid) - before[name]) / quiet_s for name, pid in self.pids.items()}

    def cpu_line(self) -> str:
        """CPU per proxied stream by process over all kept rounds, and above its idle rate.

        The sidecar's share of a proxied round's streams spills into the next direct round
        (it seals ticks ``settle_s`` late), so its figure is over both kinds of round; the fake
        server serves the direct streams too, so its figure is per stream it served.
        """
        n = self.args.streams * self.args.rounds
        wall_s = self.wall_s["direct"] + self.wall_s["proxy"]
        parts = []
        for name in self.pids:
            rounds = ("proxy",) if name == "proxy" else ("direct", "proxy")
            used_s = sum(self.cpu_s[mode][name] for mode in rounds)
            busy_s = used_s - self.idle_rate[name] * sum(self.wall_s[mode] for mode in rounds)
            per = n * (2 if name == "fake" else 1)
            label = {"proxy": "sidecar+proxy process" if self.args.in_process else "proxy process"}.get(
                name, name
            )
            parts.append(f"{label} {used_s / per * 1e3:.2f} ms ({busy_s / per * 1e3:.2f} above idle)")
        rates = ", ".join(f"{name} {rate:.3f}" for name, rate in self.idle_rate.items())
        return f"CPU per stream: {'; '.join(parts)} | idle CPU s/s: {rates} | wall {wall_s:.1f} s"

    def report(self) -> None:
        a, res = self.args, self.results
        for what, k in (("last byte", 1), ("TTFT     ", 0)):
            d, q = [x[k] for x in res["direct"]], [x[k] for x in res["proxy"]]
            print(
                f"{what} direct p50 {_pct(d, 50):.2f} ms p99 {_pct(d, 99):.2f} ms | "
                f"proxy p50 {_pct(q, 50):.2f} ms p99 {_pct(q, 99):.2f} ms"
            )
        print(self.cpu_line())
        print("added per pair (p50, p99 ms):", ", ".join(f"({x:.2f}, {y:.2f})" for x, y in self.added))
        keys = ("streams", "rounds", "max_tokens", "token_ms", "ramp_s", "pin", "in_process")
        print(json.dumps({k: getattr(a, k) for k in keys}))
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
    ap.add_argument("--profile", default="", help="py-spy the proxy's process into this file (.svg/.txt)")
    ap.add_argument("--settle-s", type=float, default=2.5, help="wait after the warm-up before idling")
    ap.add_argument("--pin", action="store_true", help="pin the processes and the client to CPUs (see above)")
    ap.add_argument(
        "--in-process", action="store_true", help="the proxy inside the sidecar's process (see above)"
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    ports = {
        "fake": free_port(),
        "proxy": free_port(),
        "api": free_port(),
        "wire": free_port(socket.SOCK_DGRAM),
    }
    urls = {"direct": f"http://127.0.0.1:{ports['fake']}", "proxy": f"http://127.0.0.1:{ports['proxy']}"}
    procs = _processes(tmp, ports, args)
    try:
        pids = {name: proc.pid for name, proc in procs.items()}
        pinned = _pin(pids) if args.pin else "not pinned (--pin pins)"
        mode = (
            "proxy inside the sidecar" if args.in_process else "proxy in its own process beside the sidecar"
        )
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio's loop (no uvloop installed)"
        print(f"{mode} on {loop} | {pinned} | load average {_load()}")
        wait_http(f"{urls['direct']}/v1/models", 30, procs["fake"], tmp / "fake.log")
        wait_http(f"{urls['proxy']}/v1/models", 60, procs["proxy"], tmp / "proxy.log")
        wait_http(
            f"http://127.0.0.1:{ports['api']}/healthz",
            60,
            procs.get("sidecar", procs["proxy"]),
            tmp / "sidecar.log",
        )
        run = _Run(args, urls, pids)
        run.pair("warm-up", keep=False)
        run.idle()
        spy = _profile(pids["proxy"], args.profile) if args.profile else None
        for r in range(args.rounds):
            run.pair(f"round {r + 1}")
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            spy.wait(timeout=60)
        time.sleep(1.5)  # the proxy's last rows and counters reach the sidecar
        print("sidecar's proxy counters:", _tap_counters(ports["api"]), f"| load average {_load()}")
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=15)
    run.report()


def _profile(pid: int, out: str) -> subprocess.Popen[bytes]:
    """py-spy sampling the proxy's process (its ``dev`` extra) over the kept rounds; a flame graph,
    or with ``out`` ending ``.txt`` the collapsed stacks."""
    fmt = "raw" if out.endswith(".txt") else "flamegraph"
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(spy), "record", "-p", str(pid), "-o", out, "-f", fmt, "-r", "200", "--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
