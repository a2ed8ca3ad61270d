"""Why the proxy lowers the switch interval: an event loop's wake-up behind a busy thread.

The proxy's event loop shares the interpreter lock with the sidecar's tick, which
runs Python and numpy for milliseconds at a time. This measures the mechanism on its
own, in one run: a process sends an 8-byte timestamp every 3 ms to an asyncio loop on
a thread of this process, which notes how long each took to be read (CLOCK_MONOTONIC
on both sides); meanwhile another thread of this process runs ``--busy-ms`` of pure
Python every 100 ms (a stand-in for a tick). Rows: no busy thread (the baseline),
then the default switch interval (5 ms) and the proxy's
(:data:`sidecar.proxy.tap.SWITCH_INTERVAL_S`), alternated ``--repeats`` times.

    .venv/bin/python benchmarks/proxy_gil_wakeup.py [--busy-ms 30] [--messages 1000]

Last line: ``wake-up p99 behind a busy thread: X ms at 5 ms, Y ms at 0.5 ms`` (medians
over the repeats).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.proxy.tap import SWITCH_INTERVAL_S

SENDER = r"""
import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for _ in range(int(sys.argv[2])):
    s.sendall(struct.pack("d", time.perf_counter()))
    time.sleep(0.003)
"""


def _busy(stop: threading.Event, busy_s: float) -> None:
    while not stop.is_set():
        until = time.perf_counter() + busy_s
        n = 0
        while time.perf_counter() < until:
            n += 1
        time.sleep(max(0.1 - busy_s, 0.0))


async def _receive(messages: int) -> list[float]:
    waits_ms: list[float] = []
    done = asyncio.Event()

    async def on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while len(waits_ms) < messages:
            (sent,) = struct.unpack("d", await reader.readexactly(8))
            waits_ms.append((time.perf_counter() - sent) * 1e3)
        done.set()
        writer.close()

    server = await asyncio.start_server(on, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = await asyncio.create_subprocess_exec(sys.executable, "-c", SENDER, str(port), str(messages))
    await done.wait()
    await sender.wait()
    server.close()
    return waits_ms


def _row(switch_s: float, busy_s: float, messages: int) -> float:
    sys.setswitchinterval(switch_s)
    stop = threading.Event()
    busy = threading.Thread(target=_busy, args=(stop, busy_s))
    if busy_s > 0:
        busy.start()
    waits: list[float] = []
    loop = threading.Thread(target=lambda: waits.extend(asyncio.run(_receive(messages))))
    loop.start()
    loop.join()
    stop.set()
    if busy_s > 0:
        busy.join()
    q = statistics.quantiles(waits, n=100)
    what = f"busy {busy_s * 1e3:.0f} ms/100 ms" if busy_s > 0 else "no busy thread "
    print(
        f"{what}, switch interval {switch_s * 1e3:.1f} ms: "
        f"wake-up p50 {q[49]:.3f} ms  p90 {q[89]:.3f} ms  p99 {q[98]:.3f} ms"
    )
    return q[98]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--busy-ms", type=float, default=30.0, help="pure Python per 100 ms on the busy thread")
    ap.add_argument("--messages", type=int, default=1000, help="timestamps per row (3 ms apart)")
    ap.add_argument("--repeats", type=int, default=3, help="alternations of the two switch intervals")
    args = ap.parse_args()
    default_s, busy_s = 0.005, args.busy_ms / 1e3
    _row(default_s, 0.0, args.messages)
    p99: dict[float, list[float]] = {default_s: [], SWITCH_INTERVAL_S: []}
    for _ in range(args.repeats):
        for switch_s in (default_s, SWITCH_INTERVAL_S):
            p99[switch_s].append(_row(switch_s, busy_s, args.messages))
    print(
        f"wake-up p99 behind a busy thread: {statistics.median(p99[default_s]):.2f} ms at "
        f"{default_s * 1e3:.0f} ms, {statistics.median(p99[SWITCH_INTERVAL_S]):.2f} ms at "
        f"{SWITCH_INTERVAL_S * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
