"""benchmarks/memory.py's view of the sidecar process: RSS and CPU from /proc, an RSS sampler, phase lines.

With a probe directory (``--heap``/``--tracemalloc``), each phase line is followed by the sidecar's
heap as :mod:`memory_probe` reports it.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

from memory_probe import Sites, ask, describe

__all__ = ["Phases", "Sampler", "cpu_s", "status_mb"]


def status_mb(pid: int, key: str) -> float:
    """A ``/proc/PID/status`` memory line (VmRSS, VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """The sidecar's RSS every 0.2 s (the peak itself comes from VmHWM)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stop, self.samples = pid, threading.Event(), [(time.monotonic(), 0.0)]

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                self.samples.append((time.monotonic(), status_mb(self.pid, "VmRSS")))
            except (OSError, KeyError):
                return

    def maxima(self, t0: float, t1: float, step_s: float) -> list[float]:
        """The highest RSS sampled in each ``step_s`` from ``t0`` to ``t1`` (MB)."""
        n = max(1, math.ceil((t1 - t0) / step_s))
        out = [0.0] * n
        for t, rss in self.samples:
            if t0 <= t < t1:
                i = min(n - 1, int((t - t0) / step_s))
                out[i] = max(out[i], rss)
        return out


class Phases:
    """Prints a line per phase (RSS, peak, CPU) and, when probing, the sidecar's heap after it."""

    def __init__(self, pid: int, probe_dir: Path | None, top: int) -> None:
        self.pid, self.probe_dir, self.asked, self.sites = pid, probe_dir, 0, Sites(top)
        self.t0_cpu_s = 0.0

    def __call__(self, name: str, extra: str = "") -> None:
        pid = self.pid
        rss = status_mb(pid, "VmRSS")
        print(f"{name:<28} rss {rss:7.1f} MB  peak so far {status_mb(pid, 'VmHWM'):7.1f} MB  "
              f"cpu {cpu_s(pid) - self.t0_cpu_s:6.1f} s  {extra}", flush=True)  # fmt: skip
        if self.probe_dir is not None:
            self.asked += 1
            print("\n".join(describe(ask(pid, self.probe_dir, self.asked, self.sites))), flush=True)
