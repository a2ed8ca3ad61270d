"""Attribution's conservation over the whole run, seen from outside, and how late the loadgen saw events.

**Conservation.** The sidecar splits every joule it measures: each tick's energy goes to
the requests that worked in it, or to *idle* (no work, or the gaps between engine steps).
So over any interval that starts before the first request's work and ends after every
request's record is sealed, (sum of the requests' energy) + (idle energy) = (device
energy). :func:`conservation` checks that over the run: from the first idle reading
(before the first request) to the last (taken after every record was final), with the
device energy read at the same instants from the sidecar's timeline. No request is cut
by an edge, so nothing is prorated, and both ends lie in idle time, where an error in
dating the idle reading moves the idle and the device energy by the same joules.

**Client lag.** The loadgen dates tokens by when their chunks arrive. On a loaded
machine the loadgen is starved and sees them late: :func:`client_lag` compares each
request's finish on the loadgen's clock with the sidecar's (``end_unix_s``). Prorating
a request's energy to a window by its chunk times (:func:`loadgen.analysis.energy_in`)
is only as good as that timing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from loadgen.analysis import energy_at
from loadgen.records import Result

__all__ = ["client_lag", "conservation", "last_end_s"]


def client_lag(results: Sequence[Result], t0_unix_s: float) -> dict[str, Any]:
    """Loadgen finish - sidecar finish (s) over requests with a record: p50, p99, max, n."""
    lags = []
    for r in results:
        span = _span_s(r, t0_unix_s) if r.ok and r.finished_s is not None else None
        if span is not None and r.finished_s is not None:
            lags.append(r.finished_s - span[1])
    if not lags:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    arr = np.asarray(lags)
    p50, p99 = np.percentile(arr, [50, 99])
    return {"n": len(lags), "p50": float(p50), "p99": float(p99), "max": float(arr.max())}


def last_end_s(results: Sequence[Result], t0_unix_s: float) -> float | None:
    """The latest end of a request's work as the sidecar dates it, on the run's clock (s)."""
    ends = [span[1] for r in results if r.ok and (span := _span_s(r, t0_unix_s)) is not None]
    return max(ends, default=None)


def _span_s(r: Result, t0_unix_s: float) -> tuple[float, float] | None:
    """The request's ``(start, end)`` as the sidecar dates it, on the run's clock (s)."""
    e = r.energy or {}
    start, end, end_unix = e.get("start_s"), e.get("end_s"), e.get("end_unix_s")
    if not all(isinstance(x, int | float) for x in (start, end, end_unix)):
        return None
    offset = float(end_unix) - float(end) - t0_unix_s  # type: ignore[arg-type]
    return float(start) + offset, float(end) + offset  # type: ignore[arg-type]


def conservation(
    results: Sequence[Result],
    samples: Sequence[tuple[float, float]],
    idle_samples: Sequence[tuple[float, float]],
    t0_unix_s: float,
) -> dict[str, Any]:
    """Requests + idle vs device energy over the run (see the module docstring). J, s."""
    with_energy = [r for r in results if r.ok and r.energy_j is not None]
    out: dict[str, Any] = {"requests": len(with_energy), "not_final": 0, "error": None, "reason": ""}
    out["not_final"] = sum(1 for r in with_energy if not (r.energy or {}).get("final"))
    if len(idle_samples) < 2 or not with_energy:
        out["reason"] = "no idle readings or no request records"
        return out
    (a_s, idle_a), (b_s, idle_b) = idle_samples[0], idle_samples[-1]
    spans = [_span_s(r, t0_unix_s) for r in with_energy]
    starts = [s[0] for s in spans if s is not None]
    ends = [s[1] for s in spans if s is not None]
    e0, e1 = energy_at(samples, a_s), energy_at(samples, b_s)
    out |= {"from_s": a_s, "to_s": b_s}
    if e0 is None or e1 is None:
        out["reason"] = "the energy series does not cover the idle readings"
        return out
    if len(spans) != len(starts) or min(starts) < a_s or max(ends) > b_s:
        out["reason"] = "the idle readings do not bracket every request's work (or a record has no times)"
        return out
    requests_j = sum(float(r.energy_j or 0.0) for r in with_energy)
    device_j, idle_j = e1 - e0, idle_b - idle_a
    out |= {"requests_j": requests_j, "idle_j": idle_j, "device_j": device_j}
    out["error"] = (requests_j + idle_j) / device_j - 1.0 if device_j > 0 else None
    return out
