"""Record a real NVML energy/power trace under a known GPU load, for replay fixtures and numbers.

Run on a machine with an NVIDIA GPU (Volta or newer), with ``torch`` and ``nvidia-ml-py``
(module ``pynvml``) installed; nothing of jouletrace is imported::

    python3 benchmarks/nvml_record.py --out /tmp/rec          # real GPU 0
    python3 benchmarks/nvml_record.py --dry-run --out /tmp/x  # fake NVML + CPU "load", no GPU
    python3 benchmarks/nvml_record.py --analyze trace.csv     # recompute the summary from a CSV

A child process (``multiprocessing`` spawn) runs the load while this process polls NVML every
10 ms (``time.monotonic()``, sleeping to the next 10 ms deadline), so the poller's timing is not
disturbed by the load's Python or CUDA work. Phases, relative to the start of recording:

* ``idle``      0-10 s: CUDA context up, matrices allocated, no kernels.
* ``mm4096``   10-30 s: back-to-back bf16 4096x4096 matmuls (synchronize every 16).
* ``mm16384``  30-50 s: back-to-back bf16 16384x16384 matmuls (synchronize after each).
* ``bursty``   50-70 s: bf16 8192 matmuls, random on/off periods of 50-500 ms (seeded),
  synchronizing after every matmul so that "off" really is off.
* ``cooldown`` 70-72 s: no load; how power decays after the last burst.

Units, everywhere (CSV and ``summary.json``): time in seconds (``t_s`` on the monotonic clock,
origin = start of the idle phase), energy in joules (NVML's mJ / 1000), power in watts (NVML's
mW / 1000), clocks in MHz, memory in bytes, utilization as a 0..1 fraction (NVML % / 100).

Per poll: ``energy_j`` = ``nvmlDeviceGetTotalEnergyConsumption`` (cumulative since driver load);
``power_w`` = field ``NVML_FI_DEV_POWER_INSTANT`` (falls back to ``nvmlDeviceGetPowerUsage``
where the field is unsupported, and ``summary.json`` says so); ``power_avg_w`` =
``nvmlDeviceGetPowerUsage`` (a ~1 s average on recent GPUs; field ``NVML_FI_DEV_POWER_AVERAGE``
is read too and summarized); ``utilization``, ``sm_clock_mhz``, ``memory_used_bytes``; the
phase label; and ``poll_cost_s``, the wall time of the whole poll.

Outputs in ``--out``: ``nvml_<gpu>_full.csv`` (the whole trace), ``nvml_<gpu>_<phase>.csv``
(one per phase), ``nvml_<gpu>_load.csv`` (the load's actual on/off intervals as timed by the
child) and ``summary.json``. CSVs are in jouletrace's replay format v1.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import datetime as dt
import gc
import itertools
import json
import math
import multiprocessing as mp
import os
import random
import re
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
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


# --------------------------------------------------------------------------- phases
def phase_schedule(scale: float = 1.0) -> list[tuple[str, float, float]]:
    """(name, start_s, end_s) relative to the recording origin; ``scale`` shortens for dry runs."""
    lengths = (IDLE_S, STEADY_S, STEADY_S, BURSTY_S, COOLDOWN_S)
    out, t = [], 0.0
    for name, length in zip(PHASE_NAMES, lengths, strict=True):
        out.append((name, t, t + length * scale))
        t += length * scale
    return out


def phase_at(schedule: Sequence[tuple[str, float, float]], t: float) -> str:
    for name, a, b in schedule:
        if a <= t < b:
            return name
    return schedule[-1][0]


def burst_plan(start: float, end: float, seed: int = BURST_SEED) -> list[tuple[float, float]]:
    """Seeded on-intervals (relative times): on and off periods each uniform in 50-500 ms."""
    rng = random.Random(seed)
    out, t, on = [], start, True
    while t < end:
        d = rng.uniform(BURST_MIN_S, BURST_MAX_S)
        if on:
            out.append((t, min(t + d, end)))
        t += d
        on = not on
    return out


# --------------------------------------------------------------------------- the load (child)
def load_main(conn: Any, scale: float, dry_run: bool, on_flag: Any) -> None:
    """Child process: allocate, warm up, say ready, get the origin, run the phases, report intervals."""
    sched = {name: (a, b) for name, a, b in phase_schedule(scale)}
    if dry_run:
        mats: dict[int, Any] = {}

        def work(size: int, reps: int) -> None:  # a CPU stand-in: ~2 ms busy per rep
            end = time.monotonic() + 0.002 * reps
            while time.monotonic() < end:
                pass

        info = {"backend": "cpu (dry run)"}
    else:
        import torch

        dev = torch.device("cuda:0")
        mats = {}
        for size in sorted({s for s, _ in LOAD_SPEC.values()}):
            g = torch.Generator(device=dev).manual_seed(size)
            a = torch.randn(size, size, device=dev, dtype=torch.bfloat16, generator=g)
            b = torch.randn(size, size, device=dev, dtype=torch.bfloat16, generator=g)
            mats[size] = (a, b, torch.empty_like(a))

        def work(size: int, reps: int) -> None:
            a, b, c = mats[size]
            for _ in range(reps):
                torch.matmul(a, b, out=c)
            torch.cuda.synchronize(dev)

        for size, reps in LOAD_SPEC.values():  # warm-up: cuBLAS handles, kernel selection
            work(size, reps)
        info = {"backend": f"torch {torch.__version__}", "device": torch.cuda.get_device_name(dev)}

    conn.send(("ready", info))
    origin = conn.recv()  # absolute monotonic time of t=0 (CLOCK_MONOTONIC is system-wide)

    def sleep_until(t_rel: float) -> None:
        while (rem := origin + t_rel - time.monotonic()) > 0:
            time.sleep(min(rem, 0.05))

    intervals: list[tuple[str, float, float, int, int]] = []  # phase, on, off, size, matmuls
    for phase in ("mm4096", "mm16384", "bursty"):
        size, reps = LOAD_SPEC[phase]
        a, b = sched[phase]
        plan = burst_plan(a, b) if phase == "bursty" else [(a, b)]
        for on_rel, off_rel in plan:
            sleep_until(on_rel)
            n = 0
            on_flag.value = size
            t_on = time.monotonic()
            while time.monotonic() < origin + off_rel:
                work(size, reps)
                n += reps
            t_off = time.monotonic()
            on_flag.value = 0
            intervals.append((phase, t_on - origin, t_off - origin, size, n))
    conn.send(("done", intervals))
    conn.close()


# --------------------------------------------------------------------------- fake NVML (dry run)
class FakeNvml:
    """Just enough of pynvml for ``--dry-run``: a 100 ms energy counter, power from the load flag."""

    NVML_CLOCK_SM = 1
    NVML_FI_DEV_POWER_AVERAGE = FI_POWER_AVERAGE
    NVML_FI_DEV_POWER_INSTANT = FI_POWER_INSTANT

    class NVMLError(Exception):
        pass

    def __init__(self, on_flag: Any) -> None:
        self.on_flag = on_flag
        self.t_last = time.monotonic()
        self.energy_mj = 123_456_789.0
        self.shown_mj = int(self.energy_mj)
        self.next_update = self.t_last + 0.1

    def _power_w(self) -> float:
        size = self.on_flag.value
        return 70.0 if size == 0 else 70.0 + 600.0 * min(1.0, size / 8192)

    def _advance(self) -> None:
        now = time.monotonic()
        self.energy_mj += self._power_w() * (now - self.t_last) * 1000.0
        self.t_last = now
        if now >= self.next_update:
            self.shown_mj = int(self.energy_mj)
            self.next_update += 0.1 * math.ceil((now - self.next_update) / 0.1 + 1e-9)

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> str:
        return "Fake GPU X100"

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return "GPU-00000000-1111-2222-3333-444444444444"

    def nvmlSystemGetDriverVersion(self) -> str:
        return "0.0.fake"

    def nvmlSystemGetNVMLVersion(self) -> str:
        return "0.0.fake"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 13000

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        return 700_000

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        self._advance()
        return self.shown_mj

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return int(self._power_w() * 1000 * 0.9)

    def nvmlDeviceGetFieldValues(self, h: int, ids: Sequence[int]) -> list[Any]:
        mw = int(self._power_w() * 1000)
        out = []
        for _fid in ids:
            v = types.SimpleNamespace(
                nvmlReturn=0,
                valueType=1,
                timestamp=int(time.time() * 1e6),
                value=types.SimpleNamespace(uiVal=mw),
            )
            out.append(v)
        return out

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        class U:
            gpu = 100 if self.on_flag.value else 0
            memory = 0

        return U()

    def nvmlDeviceGetClockInfo(self, h: int, clk: int) -> int:
        return 1980 if self.on_flag.value else 345

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        class M:
            used = 2_000_000_000
            total = 80_000_000_000
            free = total - used

        return M()


# --------------------------------------------------------------------------- NVML helpers
def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _field_w(fv: Any) -> float | None:
    """A power field value (mW) in W, or None where NVML returned an error for it."""
    if fv.nvmlReturn != 0:
        return None
    vt = int(fv.valueType)
    v = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}[vt]
    return float(getattr(fv.value, v)) / 1000.0


def device_info(nvml: Any, h: Any) -> dict[str, Any]:
    def tryget(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:  # an unsupported query must not stop the recording
            return f"unavailable: {e}"

    cuda = tryget(nvml.nvmlSystemGetCudaDriverVersion)
    return {
        "gpu": _s(nvml.nvmlDeviceGetName(h)),
        "uuid": _s(nvml.nvmlDeviceGetUUID(h)),
        "driver": _s(nvml.nvmlSystemGetDriverVersion()),
        "nvml": _s(tryget(nvml.nvmlSystemGetNVMLVersion)),
        "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) else cuda,
        "power_limit_w": tryget(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
    }


CALLS = ("energy", "fields", "power_usage", "utilization", "sm_clock", "memory")


def make_poller(nvml: Any, h: Any, use_fields: bool) -> Callable[[], tuple[Row, dict[str, float]]]:
    """One poll: every NVML read with its own cost; returns (row, costs_s).

    The energy read comes first (its midpoint is the row's time). A secondary read that fails
    once when probed here is left out (its column empty) rather than stopping the recording.
    """
    mono = time.monotonic
    fields = [FI_POWER_INSTANT, FI_POWER_AVERAGE]
    reads: dict[str, Callable[[], Any]] = {
        "power_usage": lambda: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
        "utilization": lambda: nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0,
        "sm_clock": lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM),
        "memory": lambda: nvml.nvmlDeviceGetMemoryInfo(h).used,
    }
    for name, fn in list(reads.items()):
        try:
            fn()
        except Exception as e:
            print(f"warning: {name} read unavailable ({e}); its column stays empty", flush=True)
            del reads[name]

    def poll() -> tuple[Row, dict[str, float]]:
        c: dict[str, float] = {}
        v: dict[str, Any] = {}
        t0 = mono()
        e_mj = nvml.nvmlDeviceGetTotalEnergyConsumption(h)
        t1 = mono()
        c["energy"] = t1 - t0
        inst = avg_field = inst_ts = None
        if use_fields:
            fv = nvml.nvmlDeviceGetFieldValues(h, fields)
            t2 = mono()
            c["fields"] = t2 - t1
            t1 = t2
            inst, avg_field = _field_w(fv[0]), _field_w(fv[1])
            inst_ts = int(fv[0].timestamp) if fv[0].nvmlReturn == 0 else None
        for name, fn in reads.items():
            v[name] = fn()
            t2 = mono()
            c[name] = t2 - t1
            t1 = t2
        c["poll"] = t1 - t0
        pu = v.get("power_usage")
        row: Row = {
            "t_s": t0 + c["energy"] / 2.0,  # the energy read's midpoint
            "energy_j": e_mj / 1000.0,
            "power_w": inst if inst is not None else pu,
            "power_avg_w": pu,
            "power_avg_field_w": avg_field,
            "inst_ts_us": inst_ts,
            "utilization": v.get("utilization"),
            "sm_clock_mhz": v.get("sm_clock"),
            "memory_used_bytes": v.get("memory"),
            "poll_cost_s": c["poll"],
        }
        return row, c

    return poll


def probe_fields(nvml: Any, h: Any) -> dict[str, Any]:
    """Which power fields this GPU/driver supports."""
    out: dict[str, Any] = {}
    try:
        fv = nvml.nvmlDeviceGetFieldValues(h, [FI_POWER_INSTANT, FI_POWER_AVERAGE])
        out["instant_supported"] = fv[0].nvmlReturn == 0
        out["average_field_supported"] = fv[1].nvmlReturn == 0
        out["instant_probe_w"] = _field_w(fv[0])
        out["average_field_probe_w"] = _field_w(fv[1])
    except Exception as e:
        out["instant_supported"] = out["average_field_supported"] = False
        out["error"] = str(e)
    return out


# --------------------------------------------------------------------------- recording
def record(args: argparse.Namespace) -> tuple[dict[str, Any], list[Row], list[Any]]:
    ctx = mp.get_context("spawn")
    on_flag = ctx.Value("i", 0, lock=False)
    nvml: Any
    if args.dry_run:
        nvml = FakeNvml(on_flag)
    else:
        import pynvml

        nvml = pynvml
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(args.index)
    info = device_info(nvml, h)
    fields = probe_fields(nvml, h)
    info["power_fields"] = fields
    info["power_w_source"] = (
        "NVML_FI_DEV_POWER_INSTANT" if fields["instant_supported"] else "nvmlDeviceGetPowerUsage (fallback)"
    )
    info["power_avg_w_source"] = "nvmlDeviceGetPowerUsage"
    print(json.dumps(info, indent=1), flush=True)

    parent, child = ctx.Pipe()
    proc = ctx.Process(target=load_main, args=(child, args.scale, args.dry_run, on_flag), daemon=True)
    proc.start()
    child.close()  # so that a child that dies makes recv() raise instead of hanging
    tag, load_info = parent.recv()
    assert tag == "ready", tag
    info["load"] = load_info
    sched = phase_schedule(args.scale)
    origin = time.monotonic() + 0.5
    parent.send(origin)

    poll = make_poller(nvml, h, bool(fields["instant_supported"] or fields["average_field_supported"]))
    rows: list[Row] = []
    costs: list[dict[str, float]] = []
    end = origin + sched[-1][2]
    deadline, missed = origin, 0
    gc.disable()
    try:
        while deadline < end:
            now = time.monotonic()
            if deadline > now:
                time.sleep(deadline - now)
            row, c = poll()
            row["t_s"] -= origin
            row["phase"] = phase_at(sched, row["t_s"])
            rows.append(row)
            costs.append(c)
            deadline += POLL_S
            late = time.monotonic() - deadline
            if late > 0:  # skip deadlines already passed rather than polling back-to-back
                skip = math.ceil(late / POLL_S)
                missed += skip
                deadline += skip * POLL_S
    finally:
        gc.enable()
    tag, intervals = parent.recv()
    assert tag == "done", tag
    proc.join(timeout=30)
    info["missed_deadlines"] = missed
    info["recorded_utc"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["schedule"] = [{"phase": n, "start_s": a, "end_s": b} for n, a, b in sched]
    info["poll_cost_by_call"] = {
        k: _dist([c[k] for c in costs if k in c], scale=1e3, unit="ms") for k in (*CALLS, "poll")
    }
    # from the raw polls only (not in the CSV): the instant field's own timestamps, the average field
    ts_us = [r["inst_ts_us"] for r in rows if r["inst_ts_us"]]
    steps = [(b - a) / 1e3 for a, b in itertools.pairwise(ts_us) if b != a]
    info["power_instant_field_timestamp_step_ms"] = _dist(steps, 1.0, "ms")
    avgf = [r["power_avg_field_w"] - r["power_avg_w"] for r in rows if r["power_avg_field_w"] is not None]
    info["power_average_field_minus_power_usage_w"] = _dist(avgf)
    nvml.nvmlShutdown()
    return info, rows, intervals


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


def _dist(xs: Sequence[float], scale: float = 1.0, unit: str = "") -> dict[str, Any]:
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
    d = _dist(ratios)
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
    s["poll_interval_ms"] = _dist(dts, 1e3, "ms")
    s["counter"] = {
        "updates": len(edges),
        "update_period_ms": _dist(periods, 1e3, "ms"),
        "mean_update_period_ms": (
            round((rows[edges[-1]]["t_s"] - rows[edges[0]]["t_s"]) / (len(edges) - 1) * 1e3, 3)
            if len(edges) > 1
            else None
        ),
        "polls_per_update": _dist([float(x) for x in polls_per]),
        "smallest_nonzero_increment_j": round(min(pos), 6) if pos else None,
        "value_quantum_j": quantum,
        "backwards_steps": sum(1 for x in incs if x < 0),
        "increment_j": _dist(pos),
    }
    # how often does the instant power value change?
    ch = [k for k in range(1, len(rows)) if rows[k]["power_w"] != rows[k - 1]["power_w"]]
    s["power_w_change_period_ms"] = _dist(
        [rows[b]["t_s"] - rows[a]["t_s"] for a, b in itertools.pairwise(ch)], 1e3, "ms"
    )
    s["poll_cost"] = info.get("poll_cost_by_call") or {"poll": _dist(pc, 1e3, "ms")}
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


# --------------------------------------------------------------------------- main
def write_outputs(out: Path, info: dict[str, Any], rows: Sequence[Row], intervals: Sequence[Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    g = slug(info["gpu"])
    write_csv(out / f"nvml_{g}_full.csv", info, rows)
    for p in dict.fromkeys(r["phase"] for r in rows):
        write_csv(
            out / f"nvml_{g}_{p}.csv", info, [r for r in rows if r["phase"] == p], note=f"phase {p} only"
        )
    with (out / f"nvml_{g}_load.csv").open("w", newline="") as f:
        f.write(
            "# jouletrace: the load's on intervals, timed in the load process (t_s origin as the trace)\n"
        )
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("phase", "on_s", "off_s", "matrix_size", "matmuls"))
        for p, a, b, size, n in intervals:
            w.writerow((p, f"{a:.6f}", f"{b:.6f}", size, n))
    # summarize what was written (the rounded CSV), so that tests on the CSV see the same numbers
    summary = summarize(info, read_csv(out / f"nvml_{g}_full.csv"), intervals)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


def read_cost(nvml: Any, h: Any, seconds: float = 3.0) -> dict[str, Any]:
    """Wall and CPU (thread) time of single NVML reads, each read alone, at 20 ms and back-to-back.

    Run on an idle GPU, no load process. Tells whether a read blocks (wall >> CPU) or burns CPU,
    and whether the energy read's cost depends on how often it is called.
    """
    reads: dict[str, Callable[[], Any]] = {
        "energy": lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(h),
        "fields": lambda: nvml.nvmlDeviceGetFieldValues(h, [FI_POWER_INSTANT]),
        "power_usage": lambda: nvml.nvmlDeviceGetPowerUsage(h),
    }
    out: dict[str, Any] = {}
    for name, fn in reads.items():
        for period in (0.020, 0.0):
            wall, cpu, vals, ts = [], [], [], []
            end = time.monotonic() + seconds
            nxt = time.monotonic()
            while time.monotonic() < end:
                if period:
                    nxt += period
                    time.sleep(max(0.0, nxt - time.monotonic()))
                c0, w0 = time.thread_time(), time.monotonic()
                v = fn()
                w1, c1 = time.monotonic(), time.thread_time()
                wall.append(w1 - w0)
                cpu.append(c1 - c0)
                if name == "energy":
                    vals.append(v)
                    ts.append((w0 + w1) / 2)
            key = f"{name}_{'20ms' if period else 'back_to_back'}"
            out[key] = {"wall": _dist(wall, 1e3, "ms"), "cpu": _dist(cpu, 1e3, "ms")}
            if vals:
                ch = [ts[i] for i in range(1, len(vals)) if vals[i] != vals[i - 1]]
                out[key]["update_period_ms"] = _dist([b - a for a, b in itertools.pairwise(ch)], 1e3, "ms")
                edge = {i for i in range(1, len(vals)) if vals[i] != vals[i - 1]}
                out[key]["wall_at_update"] = _dist([wall[i] for i in edge], 1e3, "ms")
                out[key]["wall_between_updates"] = _dist(
                    [w for i, w in enumerate(wall) if i not in edge], 1e3, "ms"
                )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=Path("results/nvml"))
    ap.add_argument("--index", type=int, default=0, help="NVML device index")
    ap.add_argument("--dry-run", action="store_true", help="fake NVML and a CPU load (no GPU needed)")
    ap.add_argument("--scale", type=float, default=None, help="phase length factor (default 1; dry run 0.1)")
    ap.add_argument("--analyze", type=Path, help="recompute the summary from a recorded CSV and print it")
    ap.add_argument("--load", type=Path, help="with --analyze: the load intervals CSV")
    ap.add_argument("--read-cost", action="store_true", help="time single NVML reads on an idle GPU")
    args = ap.parse_args(argv)
    if args.read_cost:
        nvml: Any
        if args.dry_run:
            nvml = FakeNvml(types.SimpleNamespace(value=0))
        else:
            import pynvml

            nvml = pynvml
        nvml.nvmlInit()
        res = read_cost(nvml, nvml.nvmlDeviceGetHandleByIndex(args.index), 0.3 if args.dry_run else 3.0)
        nvml.nvmlShutdown()
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "read_cost.json").write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps(res, indent=1))
        return 0
    if args.analyze:
        intervals: list[Any] = []
        if args.load:
            with args.load.open() as f:
                for r in csv.DictReader(ln for ln in f if not ln.startswith("#")):
                    iv = (
                        r["phase"],
                        float(r["on_s"]),
                        float(r["off_s"]),
                        int(r["matrix_size"]),
                        int(r["matmuls"]),
                    )
                    intervals.append(iv)
        print(json.dumps(summarize({}, read_csv(args.analyze), intervals), indent=1))
        return 0
    if args.scale is None:
        args.scale = 0.1 if args.dry_run else 1.0
    t = time.monotonic()
    info, rows, intervals = record(args)
    write_outputs(args.out, info, rows, intervals)
    print(f"recorded {len(rows)} polls in {time.monotonic() - t:.1f} s -> {args.out}", flush=True)
    print((args.out / "summary.json").read_text(), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
