"""Arrival processes: when each request is sent (seconds from the run's start).

- ``all``: every request at t = 0 (the study's protocol: the server's batch cap limits concurrency);
- ``poisson:RATE``: exponential gaps, RATE requests/s;
- ``constant:RATE``: evenly spaced, RATE requests/s;
- ``gamma:RATE:BURSTINESS``: gamma gaps with mean 1/RATE and shape BURSTINESS
  (1 = Poisson, < 1 burstier, > 1 more regular; the same knob as ``vllm bench serve``);
- ``concurrency:C``: a closed loop: C requests in flight, the next leaves when one finishes;
- ``replay:PATH[:SPEED]``: timestamps (seconds) from a trace file, one per line or a CSV/JSONL
  with a ``timestamp`` field; offsets are relative to the first; SPEED > 1 replays faster.
  Timestamps must be finite numbers that do not decrease, spanning at most a week at SPEED
  (:data:`MAX_REPLAY_S`); a bad line is refused naming the file and line.

Everything is deterministic in the seed.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loadgen.config import DAY_S
from loadgen.errors import InputError, where
from loadgen.user_files import loads, read_text

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

MAX_REPLAY_S = 7 * DAY_S  # a replayed trace (at its speed) spans at most a week


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


def _stamp(value: Any, path: Path, line: int) -> float:
    """A timestamp (s) that is a finite number, else an error naming the line."""
    at = where(str(path), line, "timestamp")
    try:
        t = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError) as err:
        raise InputError(f"{at}: expected a number, got {value!r:.40}") from err
    if not math.isfinite(t):
        raise InputError(f"{at}: expected a finite number, got {value!r:.40}")
    return t


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_stamps(path: Path, numbered: list[tuple[int, str]]) -> list[float]:
    """One timestamp a line, or a CSV whose header (a first row that is not a number) names ``timestamp``."""
    col, rows = 0, numbered
    header = [c.strip() for c in next(csv.reader([numbered[0][1]]))]
    if not _is_number(header[0]):
        if "timestamp" not in header:
            raise InputError(f"{where(str(path), numbered[0][0], None)}: header has no 'timestamp' column")
        col, rows = header.index("timestamp"), numbered[1:]
    out: list[float] = []
    for i, ln in rows:
        row = next(csv.reader([ln]))
        out.append(_stamp(row[col].strip() if col < len(row) else None, path, i))
    return out


def _read_timestamps(path: Path) -> list[float]:
    lines = read_text(path, "arrival trace").splitlines()
    numbered = [(i, ln) for i, ln in enumerate(lines, start=1) if ln.strip()]
    if not numbered or not numbered[0][1].lstrip().startswith("{"):
        return _csv_stamps(path, numbered) if numbered else []
    out: list[float] = []
    for i, ln in numbered:
        row = loads(ln, str(path), i)
        if not isinstance(row, dict) or "timestamp" not in row:
            raise InputError(
                f'{where(str(path), i, "timestamp")}: missing (expected {{"timestamp": SECONDS}})'
            )
        out.append(_stamp(row["timestamp"], path, i))
    return out


def replay(path: str | Path, n: int | None, speed: float = 1.0) -> Schedule:
    """Send times from a trace file (see the module docstring); ``n=None`` sends one per timestamp."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: arrival trace not found")
    if not 0 < speed < math.inf:
        raise InputError(f"{p}: replay speed must be a finite number > 0, got {speed}")
    stamps = _read_timestamps(p)
    if not stamps:
        raise InputError(f"{p}: arrival trace has no timestamps")
    if n is not None and n > len(stamps):
        raise InputError(f"{p}: {n} requests asked but the trace has {len(stamps)} timestamps")
    t = np.asarray(stamps[: n if n is not None else len(stamps)], dtype=np.float64)
    if np.any(np.diff(t) < 0):
        bad = int(np.argmax(np.diff(t) < 0)) + 2
        raise InputError(f"{where(str(p), bad, 'timestamp')}: timestamps must not decrease")
    if (t[-1] - t[0]) / speed > MAX_REPLAY_S:
        raise InputError(f"{p}: the trace spans {(t[-1] - t[0]) / speed:.3g} s; at most {MAX_REPLAY_S:g} s")
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
