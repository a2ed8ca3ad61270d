"""Record a real NVML energy/power trace under a known GPU load, for replay fixtures and numbers.

Run on a machine with an NVIDIA GPU (Volta or newer), with ``torch`` and ``nvidia-ml-py``
(module ``pynvml``) installed; nothing of jouletrace is imported, only the sibling modules
``nvml_trace.py`` (CSV and analysis), ``nvml_poll.py`` (the NVML calls) and ``nvml_fake.py``
(the dry-run stand-in), so copy ``benchmarks/`` as a whole::

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
import csv
import datetime as dt
import gc
import itertools
import json
import math
import multiprocessing as mp
import os
import random
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Siblings in benchmarks/ (this script runs as `python3 benchmarks/nvml_record.py`).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from nvml_fake import FakeNvml
from nvml_poll import CALLS, device_info, make_poller, probe_fields, read_cost
from nvml_trace import (
    BURST_MAX_S,
    BURST_MIN_S,
    BURST_SEED,
    BURSTY_S,
    COOLDOWN_S,
    IDLE_S,
    LOAD_SPEC,
    PHASE_NAMES,
    POLL_S,
    STEADY_S,
    Row,
    dist,
    read_csv,
    slug,
    summarize,
    write_csv,
)


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
        k: dist([c[k] for c in costs if k in c], scale=1e3, unit="ms") for k in (*CALLS, "poll")
    }
    # from the raw polls only (not in the CSV): the instant field's own timestamps, the average field
    ts_us = [r["inst_ts_us"] for r in rows if r["inst_ts_us"]]
    steps = [(b - a) / 1e3 for a, b in itertools.pairwise(ts_us) if b != a]
    info["power_instant_field_timestamp_step_ms"] = dist(steps, 1.0, "ms")
    avgf = [r["power_avg_field_w"] - r["power_avg_w"] for r in rows if r["power_avg_field_w"] is not None]
    info["power_average_field_minus_power_usage_w"] = dist(avgf)
    nvml.nvmlShutdown()
    return info, rows, intervals


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
