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

__all__ = ["Phases", "Sampler", "cpu_s", "rss_split", "status_mb"]


def status_mb(pid: int, key: str) -> float:
    """A ``/proc/PID/status`` memory line (VmRSS, VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def rss_split(pid: int) -> str:
    """The RSS's two parts (``/proc/PID/status``): anonymous memory (the heap, Python's arenas,
    NumPy's arrays, native buffers: what the sidecar's state and allocators hold) and pages of
    files (the interpreter's and the extension libraries' code and data, mapped from disk)."""
    return f"(anon {status_mb(pid, 'RssAnon'):.1f}, files {status_mb(pid, 'RssFile'):.1f})"


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """The sidecar's RSS every 0.2 s (the peak itself comes from VmHWM), and the split of the
    highest sample (:func:`rss_split`)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stop, self.samples = pid, threading.Event(), [(time.monotonic(), 0.0)]
        self.split_at_max = ""

    def run(self) -> None:
        highest = 0.0
        while not self.stop.wait(0.2):
            try:
                rss = status_mb(self.pid, "VmRSS")
                if rss > highest:
                    highest, self.split_at_max = rss, rss_split(self.pid)
            except (OSError, KeyError):
                return
            self.samples.append((time.monotonic(), rss))

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
        peak = status_mb(pid, "VmHWM")
        print(f"{name:<28} rss {rss:7.1f} MB {rss_split(pid)}  peak so far {peak:7.1f} MB  "
              f"cpu {cpu_s(pid) - self.t0_cpu_s:6.1f} s  {extra}", flush=True)  # fmt: skip
        if self.probe_dir is not None:
            self.asked += 1
            print("\n".join(describe(ask(pid, self.probe_dir, self.asked, self.sites))), flush=True)
