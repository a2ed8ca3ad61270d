"""NVML trace files and their analysis, shared by ``nvml_record.py`` (and usable alone).

The CSV is jouletrace's replay format v1; units as in ``nvml_record.py``: seconds, joules,
watts, MHz, bytes, 0..1 utilization.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

POLL_S = 0.010
IDLE_S, STEADY_S, BURSTY_S, COOLDOWN_S = 10.0, 20.0, 20.0, 2.0
BURST_MIN_S, BURST_MAX_S, BURST_SEED = 0.050, 0.500, 20260101
PHASE_NAMES = ("idle", "mm4096", "mm16384", "bursty", "cooldown")
# matrix size and matmuls between synchronizations, per loaded phase
LOAD_SPEC = {"mm4096": (4096, 16), "mm16384": (16384, 1), "bursty": (8192, 1)}

CSV_COLUMNS = (
    "t_s",
    "device",
    "energy_j",
    "power_w",
    "utilization",
    "sm_clock_mhz",
    "memory_used_bytes",
    "power_avg_w",
    "phase",
    "poll_cost_s",
)
Row = dict[str, Any]

# NVML field ids and value types (stable across nvml.h versions)
FI_POWER_AVERAGE = 185
FI_POWER_INSTANT = 186


# --------------------------------------------------------------------------- CSV
def slug(gpu: str) -> str:
    m = re.search(r"\b([A-Za-z]{1,2}\d{2,4}[A-Za-z]?)\b", gpu.replace("NVIDIA", ""))
    return (m.group(1) if m else re.sub(r"[^a-z0-9]+", "_", gpu.lower()).strip("_")).lower()


def _fmt(x: Any, nd: int) -> str:
    return "" if x is None else f"{float(x):.{nd}f}"


def write_csv(path: Path, info: dict[str, Any], rows: Sequence[Row], note: str = "") -> None:
    with path.open("w", newline="") as f:
        f.write("# jouletrace replay trace v1\n")
        f.write(
            f"# gpu: {info['gpu']}; driver: {info['driver']}; nvml: {info['nvml']}; "
            f"recorded: {info['recorded_utc']}; poll: {int(POLL_S * 1000)} ms; by benchmarks/nvml_record.py\n"
        )
        f.write(
            f"# t_s origin = start of idle phase; power_w = {info['power_w_source']}; "
            f"power_avg_w = {info['power_avg_w_source']}{'; ' + note if note else ''}\n"
        )
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for r in rows:
            w.writerow(
                [
                    _fmt(r["t_s"], 6),
                    info["uuid"],
                    _fmt(r["energy_j"], 3),
                    _fmt(r["power_w"], 2),
                    _fmt(r["utilization"], 2),
                    "" if r["sm_clock_mhz"] is None else int(r["sm_clock_mhz"]),
                    "" if r["memory_used_bytes"] is None else int(r["memory_used_bytes"]),
                    _fmt(r["power_avg_w"], 2),
                    r["phase"],
                    _fmt(r["poll_cost_s"], 6),
                ]
            )


def read_csv(path: Path) -> list[Row]:
    with path.open() as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    rows: list[Row] = []
    for r in csv.DictReader(lines):
        row: Row = dict(r)
        for k in ("t_s", "energy_j", "power_w", "utilization", "power_avg_w", "poll_cost_s"):
            row[k] = float(r[k]) if r.get(k) else None
        rows.append(row)
    rows.sort(key=lambda r: r["t_s"])
    return rows


# --------------------------------------------------------------------------- analysis
def _q(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    i = q * (len(s) - 1)
    lo = math.floor(i)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (i - lo)


def dist(xs: Sequence[float], scale: float = 1.0, unit: str = "") -> dict[str, Any]:
    if not xs:
        return {"n": 0}
    return {
        "unit": unit,
        "n": len(xs),
        "median": round(statistics.median(xs) * scale, 4),
        "p10": round(_q(xs, 0.10) * scale, 4),
        "p90": round(_q(xs, 0.90) * scale, 4),
        "p99": round(_q(xs, 0.99) * scale, 4),
        "max": round(max(xs) * scale, 4),
    }


def update_edges(rows: Sequence[Row]) -> list[int]:
    """Indices of polls whose energy_j differs from the previous poll's (the counter updated)."""
    return [i for i in range(1, len(rows)) if rows[i]["energy_j"] != rows[i - 1]["energy_j"]]


def trapezoid(rows: Sequence[Row], key: str, t_a: float, t_b: float) -> float:
    """Integral of rows[key] over [t_a, t_b] (trapezoid, linear interpolation at the ends)."""
    pts = [(r["t_s"], r[key]) for r in rows if r[key] is not None]
    total = 0.0
    for (t0, p0), (t1, p1) in itertools.pairwise(pts):
        a, b = max(t0, t_a), min(t1, t_b)
        if b <= a:
            continue

        def at(t: float, t0: float = t0, p0: float = p0, t1: float = t1, p1: float = p1) -> float:
            return p0 + (p1 - p0) * (t - t0) / (t1 - t0)

        total += (at(a) + at(b)) / 2.0 * (b - a)
    return total


def phase_stats(rows: Sequence[Row], phase: str) -> dict[str, Any]:
    """Counter energy vs integrated power over the phase, between its first and last counter edge.

    Both are taken between the first and the last counter update inside the phase (times = the
    polls that first saw each new value), so the counter's ~100 ms steps do not bias the span.
    """
    idx = [i for i, r in enumerate(rows) if r["phase"] == phase]
    if len(idx) < 3:
        return {"polls": len(idx)}
    lo, hi = idx[0], idx[-1]
    edges = [i for i in update_edges(rows) if lo < i <= hi]
    out: dict[str, Any] = {"polls": len(idx), "duration_s": round(rows[hi]["t_s"] - rows[lo]["t_s"], 4)}
    pw = [rows[i]["power_w"] for i in idx if rows[i]["power_w"] is not None]
    pa = [rows[i]["power_avg_w"] for i in idx if rows[i]["power_avg_w"] is not None]
    out["mean_power_w"] = round(statistics.fmean(pw), 2) if pw else None
    out["mean_power_avg_w"] = round(statistics.fmean(pa), 2) if pa else None
    ut = [rows[i]["utilization"] for i in idx if rows[i]["utilization"] is not None]
    out["mean_utilization"] = round(statistics.fmean(ut), 3) if ut else None
    if len(edges) < 2:
        out["counter_updates"] = len(edges)
        return out
    a, b = edges[0], edges[-1]
    t_a, t_b = rows[a]["t_s"], rows[b]["t_s"]
    e_counter = rows[b]["energy_j"] - rows[a]["energy_j"]
    e_inst = trapezoid(rows, "power_w", t_a, t_b)
    e_avg = trapezoid(rows, "power_avg_w", t_a, t_b)
    out.update(
        {
            "counter_updates": len(edges),
            "span_s": round(t_b - t_a, 4),
            "counter_energy_j": round(e_counter, 3),
            "instant_power_integral_j": round(e_inst, 3),
            "avg_power_integral_j": round(e_avg, 3),
            "counter_over_instant": round(e_counter / e_inst, 5) if e_inst else None,
            "counter_over_avg": round(e_counter / e_avg, 5) if e_avg else None,
            "counter_mean_power_w": round(e_counter / (t_b - t_a), 2),
        }
    )
    return out


def windowed_agreement(rows: Sequence[Row], window_updates: int = 10) -> dict[str, Any]:
    """counter/instant-integral ratio over windows of N consecutive counter updates (~1 s)."""
    edges = update_edges(rows)
    ratios = []
    for k in range(0, len(edges) - window_updates, window_updates):
        a, b = edges[k], edges[k + window_updates]
        e_c = rows[b]["energy_j"] - rows[a]["energy_j"]
        e_i = trapezoid(rows, "power_w", rows[a]["t_s"], rows[b]["t_s"])
        if e_i > 0:
            ratios.append(e_c / e_i)
    d = dist(ratios)
    d["window_updates"] = window_updates
    return d


def response_lag(rows: Sequence[Row], intervals: Sequence[Any], key: str) -> dict[str, Any]:
    """Lag (s) maximizing the correlation between the bursty load's on/off and a power series."""
    br = [r for r in rows if r["phase"] == "bursty" and r[key] is not None]
    ons = [(a, b) for p, a, b, *_ in intervals if p == "bursty"]
    if len(br) < 50 or not ons:
        return {}
    ts = [r["t_s"] for r in br]
    ys = [float(r[key]) for r in br]
    starts = [a for a, _ in ons]

    def on_at(t: float) -> float:
        k = bisect.bisect_right(starts, t) - 1
        return 1.0 if k >= 0 and t < ons[k][1] else 0.0

    best = (-2.0, 0.0)
    for lag_ms in range(0, 1001, 10):
        lag = lag_ms / 1000.0
        xs = [on_at(t - lag) for t in ts]
        if statistics.pstdev(xs) == 0:
            continue
        c = statistics.correlation(xs, ys)
        best = max(best, (c, lag))
    return {"best_lag_s": best[1], "correlation": round(best[0], 4)}


def counter_power_rows(rows: Sequence[Row]) -> list[Row]:
    """Per poll, the power implied by the counter: dE/dt between the edges around it."""
    edges = update_edges(rows)
    out: list[Row] = []
    for a, b in itertools.pairwise(edges):
        p = (rows[b]["energy_j"] - rows[a]["energy_j"]) / (rows[b]["t_s"] - rows[a]["t_s"])
        # the counter value seen at edge b accumulated over the update period ending before b
        for i in range(a, b):
            out.append({"t_s": rows[i]["t_s"], "phase": rows[i]["phase"], "counter_power_w": p})
    return out


def summarize(info: dict[str, Any], rows: Sequence[Row], intervals: Sequence[Any]) -> dict[str, Any]:
    edges = update_edges(rows)
    periods = [rows[b]["t_s"] - rows[a]["t_s"] for a, b in itertools.pairwise(edges)]
    polls_per = [b - a for a, b in itertools.pairwise(edges)]
    incs = [rows[i]["energy_j"] - rows[i - 1]["energy_j"] for i in edges]
    pos = [x for x in incs if x > 0]
    quantum = None
    for q in (1.0, 0.1, 0.01, 0.001):
        if all(abs(r["energy_j"] / q - round(r["energy_j"] / q)) < 1e-6 for r in rows):
            quantum = q
            break
    dts = [b["t_s"] - a["t_s"] for a, b in itertools.pairwise(rows)]
    pc = [r["poll_cost_s"] for r in rows if r["poll_cost_s"] is not None]
    s: dict[str, Any] = {k: v for k, v in info.items() if k not in ("poll_cost_by_call",)}
    s["polls"] = len(rows)
    s["poll_interval_ms"] = dist(dts, 1e3, "ms")
    s["counter"] = {
        "updates": len(edges),
        "update_period_ms": dist(periods, 1e3, "ms"),
        "mean_update_period_ms": (
            round((rows[edges[-1]]["t_s"] - rows[edges[0]]["t_s"]) / (len(edges) - 1) * 1e3, 3)
            if len(edges) > 1
            else None
        ),
        "polls_per_update": dist([float(x) for x in polls_per]),
        "smallest_nonzero_increment_j": round(min(pos), 6) if pos else None,
        "value_quantum_j": quantum,
        "backwards_steps": sum(1 for x in incs if x < 0),
        "increment_j": dist(pos),
    }
    # how often does the instant power value change?
    ch = [k for k in range(1, len(rows)) if rows[k]["power_w"] != rows[k - 1]["power_w"]]
    s["power_w_change_period_ms"] = dist(
        [rows[b]["t_s"] - rows[a]["t_s"] for a, b in itertools.pairwise(ch)], 1e3, "ms"
    )
    s["poll_cost"] = info.get("poll_cost_by_call") or {"poll": dist(pc, 1e3, "ms")}
    s["phases"] = {p: phase_stats(rows, p) for p in dict.fromkeys(r["phase"] for r in rows)}
    s["agreement_1s_windows"] = windowed_agreement(rows)
    if intervals:
        cp = counter_power_rows(rows)
        s["bursty_response_lag"] = {
            "power_w": response_lag(rows, intervals, "power_w"),
            "power_avg_w": response_lag(rows, intervals, "power_avg_w"),
            "counter_power": response_lag(cp, intervals, "counter_power_w"),
        }
        for phase in ("mm4096", "mm16384", "bursty"):
            iv = [x for x in intervals if x[0] == phase]
            on = sum(b - a for _, a, b, _, _ in iv)
            flops = sum(2.0 * size**3 * n for _, _, _, size, n in iv)
            s["phases"].setdefault(phase, {})["load"] = {
                "on_intervals": len(iv),
                "on_s": round(on, 3),
                "matmuls": sum(n for *_, n in iv),
                "tflops_while_on": round(flops / on / 1e12, 1) if on else None,
            }
    return s
