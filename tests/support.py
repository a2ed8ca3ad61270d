"""Helpers shared by the tests: a free port, waiting for a process or URL, a clock that moves when told,
work in rows as one event per row, a running sidecar's /metrics parsed."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from servers.ports import free_port
from sidecar.attribution.events import Phase, StepBatch, WorkEvent, WorkRows

__all__ = [
    "FakeClock",
    "Samples",
    "free_port",
    "http_ok",
    "metrics",
    "tap_counts",
    "taps",
    "wait_for",
    "wait_http",
    "work_events",
]

Samples = dict[str, list[tuple[dict[str, str], float]]]  # sample name -> [(labels, value)]


def work_events(events: Sequence[WorkEvent | StepBatch | WorkRows]) -> list[WorkEvent]:
    """Every work row as a :class:`WorkEvent`: ``WorkRows`` and ``StepBatch`` expanded, in member order."""
    out: list[WorkEvent] = []
    for e in events:
        if isinstance(e, WorkRows):
            cols = (e.member, e.t0_s, e.t1_s, e.phase, e.units, e.steps, e.context_tokens)
            for m, t0, t1, phase, units, steps, ctx in zip(*(c.tolist() for c in cols), strict=True):
                out.append(WorkEvent(e.request_ids[m], t0, t1, Phase(phase), units, steps, ctx))
        elif isinstance(e, StepBatch):
            for i, request_id in enumerate(e.request_ids):
                phase, units, ctx = Phase(int(e.phase[i])), float(e.units[i]), float(e.context_tokens[i])
                out.append(WorkEvent(request_id, e.t0_s, e.t1_s, phase, units, e.steps, ctx))
        elif isinstance(e, WorkEvent):
            out.append(e)
        else:
            raise TypeError(f"unexpected {type(e).__name__}")
    return out


class FakeClock:
    """Seconds that change only when the test sets ``t_s`` or calls :meth:`advance`."""

    def __init__(self, t_s: float = 1000.0) -> None:
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s

    def advance(self, dt_s: float) -> None:
        self.t_s += dt_s


def python_prints(code: str) -> str:
    """What ``code`` prints, run in a fresh interpreter (this one's modules do not leak into it)."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return out.stdout.strip()


def _why(proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None, log: Path | None) -> str:
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    code = f" (exit code {proc.returncode})" if proc is not None and proc.returncode is not None else ""
    return f"{code}\n{tail}" if tail else code


def wait_for(
    check: Callable[[], bool],
    timeout_s: float,
    proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None = None,
    log: Path | None = None,
    what: str = "condition",
    interval_s: float = 0.1,
) -> None:
    """Poll ``check`` until it is true; fail at once if ``proc`` exits (quoting ``log``'s tail).

    A check that raises ``OSError`` (connection refused, a URL error) counts as not yet.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited early{_why(proc, log)}")
        try:
            if check():
                return
        except OSError:  # not listening yet (urllib.error.URLError is an OSError)
            pass
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not within {timeout_s} s{_why(proc, log)}")


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """True if ``GET url`` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return 200 <= int(resp.status) < 300
    except urllib.error.HTTPError:
        return False


def wait_http(
    url: str,
    timeout_s: float,
    proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None = None,
    log: Path | None = None,
) -> None:
    """Wait until ``GET url`` answers 2xx (see :func:`wait_for`)."""
    wait_for(lambda: http_ok(url), timeout_s, proc, log, what=url)


def metrics(url: str, timeout_s: float = 5.0) -> Samples:
    """A server's /metrics (``url`` without the path), parsed by prometheus_client: name -> samples."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=timeout_s) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def taps(samples: Samples) -> dict[tuple[str, str], float]:
    """The sidecar's tap counters: (tap, outcome) -> count."""
    return {(lab["jouletrace_tap"], lab["outcome"]): v for lab, v in samples["jouletrace_tap_events_total"]}


def tap_counts(url: str) -> dict[tuple[str, str], float]:
    """A running sidecar's tap counters, read from its /metrics."""
    return taps(metrics(url))
