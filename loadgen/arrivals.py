"""Arrival processes: when each request is sent (seconds from the run's start).

- ``all``: every request at t = 0 (the study's protocol: the server's batch cap limits concurrency);
- ``poisson:RATE``: exponential gaps, RATE requests/s;
- ``constant:RATE``: evenly spaced, RATE requests/s;
- ``gamma:RATE:BURSTINESS``: gamma gaps with mean 1/RATE and shape BURSTINESS
  (1 = Poisson, < 1 burstier, > 1 more regular; the same knob as ``vllm bench serve``);
- ``concurrency:C``: a closed loop: C requests in flight, the next leaves when one finishes;
- ``replay:PATH[:SPEED]``: timestamps (seconds) from a trace file, one per line or a CSV/JSONL
  with a ``timestamp`` field; offsets are relative to the first; SPEED > 1 replays faster.

Everything is deterministic in the seed.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loadgen.errors import InputError, where

__all__ = [
    "Schedule",
    "all_at_once",
    "concurrency",
    "constant",
    "gamma",
    "parse_arrivals",
    "poisson",
    "replay",
]


@dataclass(frozen=True, slots=True)
class Schedule:
    """Target send times (s from start, non-decreasing) and an optional in-flight cap."""

    offsets_s: NDArray[np.float64]
    kind: str
    max_in_flight: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.offsets_s.size)

    def describe(self) -> dict[str, Any]:
        """For results.json."""
        return {"kind": self.kind, "max_in_flight": self.max_in_flight, **self.params}


def all_at_once(n: int) -> Schedule:
    """All ``n`` requests at t = 0."""
    return Schedule(np.zeros(n), "all")


def poisson(n: int, rate_per_s: float, seed: int) -> Schedule:
    """Poisson arrivals at ``rate_per_s`` requests/s; the first leaves at t = 0."""
    return gamma(n, rate_per_s, 1.0, seed, kind="poisson")


def gamma(n: int, rate_per_s: float, burstiness: float, seed: int, kind: str = "gamma") -> Schedule:
    """Gamma-distributed gaps: mean ``1/rate_per_s`` s, shape ``burstiness`` (CV = 1/sqrt(shape))."""
    if not (0 < rate_per_s < math.inf and 0 < burstiness < math.inf):
        raise InputError(
            f"arrival rate and burstiness must be > 0, got rate={rate_per_s} burstiness={burstiness}"
        )
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate_per_s * burstiness), size=max(0, n - 1))
    offsets = np.concatenate([[0.0], np.cumsum(gaps)]) if n > 0 else np.zeros(0)
    params: dict[str, Any] = {"rate_per_s": rate_per_s}
    if kind == "gamma":
        params["burstiness"] = burstiness
    return Schedule(offsets, kind, params=params | {"seed": seed})


def constant(n: int, rate_per_s: float) -> Schedule:
    """Evenly spaced arrivals, ``1/rate_per_s`` s apart (the first at t = 0)."""
    if not 0 < rate_per_s < math.inf:
        raise InputError(f"arrival rate must be a finite number > 0, got {rate_per_s}")
    return Schedule(
        np.arange(n, dtype=np.float64) / rate_per_s, "constant", params={"rate_per_s": rate_per_s}
    )


def concurrency(n: int, limit: int) -> Schedule:
    """A closed loop with ``limit`` requests in flight."""
    if limit <= 0:
        raise InputError(f"concurrency must be > 0, got {limit}")
    return Schedule(np.zeros(n), "concurrency", max_in_flight=limit, params={"concurrency": limit})


def _read_timestamps(path: Path) -> list[float]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    out: list[float] = []
    first = next((ln for ln in lines if ln.strip()), "")
    if first.lstrip().startswith("{"):
        for i, ln in enumerate(lines, start=1):
            if not ln.strip():
                continue
            try:
                value = json.loads(ln)["timestamp"]
                out.append(float(value))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise InputError(f"{where(str(path), i, 'timestamp')}: expected a number ({err})") from err
        return out
    has_header = "timestamp" in first
    reader = csv.reader(lines)
    col = 0
    for i, row in enumerate(reader, start=1):
        if not row or not "".join(row).strip():
            continue
        if has_header and i == 1:
            col = [c.strip() for c in row].index("timestamp")
            continue
        try:
            out.append(float(row[col]))
        except (IndexError, ValueError) as err:
            raise InputError(f"{where(str(path), i, 'timestamp')}: expected a number, got {row!r}") from err
    return out


def replay(path: str | Path, n: int | None, speed: float = 1.0) -> Schedule:
    """Send times from a trace file (see the module docstring); ``n=None`` sends one per timestamp."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: arrival trace not found")
    if speed <= 0:
        raise InputError(f"{p}: replay speed must be > 0, got {speed}")
    stamps = _read_timestamps(p)
    if not stamps:
        raise InputError(f"{p}: arrival trace has no timestamps")
    if n is not None and n > len(stamps):
        raise InputError(f"{p}: {n} requests asked but the trace has {len(stamps)} timestamps")
    t = np.asarray(stamps[: n if n is not None else len(stamps)], dtype=np.float64)
    if np.any(np.diff(t) < 0):
        bad = int(np.argmax(np.diff(t) < 0)) + 2
        raise InputError(f"{where(str(p), bad, 'timestamp')}: timestamps must not decrease")
    return Schedule((t - t[0]) / speed, "replay", params={"path": str(p), "speed": speed})


def parse_arrivals(text: str, n: int | None, seed: int) -> Schedule:
    """Parse an ``--arrivals`` value (see the module docstring); ``n=None`` only for replay."""
    kind, _, rest = text.partition(":")
    args = rest.split(":") if rest else []
    try:
        if kind == "replay":
            if not args:
                raise InputError("--arrivals replay needs a path: replay:PATH[:SPEED]")
            speed = float(args[1]) if len(args) > 1 else 1.0
            return replay(args[0], n, speed)
        if n is None:
            raise InputError(f"--arrivals {text}: needs a request count (--requests)")
        if kind == "all" and not args:
            return all_at_once(n)
        if kind == "poisson" and len(args) == 1:
            return poisson(n, float(args[0]), seed)
        if kind == "constant" and len(args) == 1:
            return constant(n, float(args[0]))
        if kind == "gamma" and len(args) == 2:
            return gamma(n, float(args[0]), float(args[1]), seed)
        if kind == "concurrency" and len(args) == 1:
            return concurrency(n, int(args[0]))
    except ValueError as err:
        raise InputError(f"--arrivals {text!r}: {err}") from err
    raise InputError(
        f"--arrivals {text!r}: expected all, poisson:RATE, constant:RATE, gamma:RATE:BURSTINESS, "
        "concurrency:C or replay:PATH[:SPEED]"
    )
