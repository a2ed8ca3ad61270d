"""Eight GPUs on one poll thread: how well are counter updates dated, and at what CPU cost?

A discrete-event simulation (no GPU needed; not a measurement of one): 8 fake GPUs
(``tests/sidecar/meters/fake_nvml.py``, read through the sidecar's ``NvmlLib``),
each counter updating every 100 ms on its own random phase with 0.2 ms jitter per
update and its own clock drift (±50 ppm), by the per-update increments recorded
on the H200 (``tests/data/nvml_h200_full.csv``: idle, matmul, bursty, cooldown),
each device starting at its own place in the recording. Each energy read takes the
time and CPU recorded on an H200 (``tests/data/nvml_h200_read_cost.json``: the read that sees a
new value and the one that does not, sampled from their recorded quantiles; CPU =
wall as recorded), during which the poll thread can do nothing else; the counter is
sampled in the middle of the read.

Two schedules, same devices, same seed:

* **baseline** (``poll_schedule=fixed``, the sidecar before phase-locking): every 20 ms (dithered ±25 %), read
  all 8 GPUs one after another, stamp the pass with its midpoint, date each change
  on a per-device :class:`~sidecar.grid.GridClock` (generous: the timeline keeps one);
* **phase-locked**: the sidecar's :class:`~sidecar.meters.phased.PhasedReader` (one
  :class:`~sidecar.meters.phase_lock.PhaseLock` per device, the read due first, a locked
  device's before a searching one's), scored on the readings it hands the timeline.
  While a device's increments are steady it reads every 2nd update only (back-off),
  so the energy of the update in between is interpolated: reported as the error of
  the energy per update.

Reported after a warm-up (``--warmup-s``): the error of each dated update against
the true update time (p50, p99), the reads per update, the poll thread's CPU as %
of one core, and the error of each true update's energy when the dated readings
are interpolated linearly as the timeline does (p50, p99, % of that update's energy).
Ends with one line ``devices 8 edge p99 X ms | core % Y`` (phase-locked).

    .venv/bin/python benchmarks/nvml_poll_scale.py [--devices 8] [--duration-s 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the fake NVML lives in the test tree

from sidecar.grid import GridClock  # noqa: E402
from sidecar.meters.nvml_lib import NvmlLib  # noqa: E402
from sidecar.meters.phase_lock import PhaseLock  # noqa: E402
from sidecar.meters.phased import PhasedReader  # noqa: E402
from tests.sidecar.meters.fake_nvml import FakeGpu, FakeNvml  # noqa: E402

COST = REPO / "tests" / "data" / "nvml_h200_read_cost.json"
TRACE = REPO / "tests" / "data" / "nvml_h200_full.csv"
PERIOD_S = 0.1


def recorded_increments_j() -> np.ndarray:
    """Energy added by each counter update in the H200 recording (J), in order."""
    rows = [ln.split(",") for ln in TRACE.read_text(encoding="utf-8").splitlines() if ln[:1].isdigit()]
    energy_j = np.array([float(r[2]) for r in rows])
    changes = energy_j[np.flatnonzero(np.diff(energy_j) != 0) + 1]
    return np.diff(changes)


def quantile_sampler(stats: dict[str, float], rng: random.Random) -> Callable[[], float]:
    """Seconds drawn from a distribution through its recorded quantiles (ms), linear between them."""
    qs = [(0.0, stats["p10"]), (0.1, stats["p10"]), (0.5, stats["median"]), (0.9, stats["p90"])]
    qs += [(0.99, stats["p99"]), (1.0, stats["max"])]
    ps, ms = [q[0] for q in qs], [q[1] for q in qs]
    return lambda: float(np.interp(rng.random(), ps, ms)) / 1e3


@dataclass
class Device:
    gpu: FakeGpu
    edges: list[float]  # true update times (s)
    counter_j: np.ndarray  # counter value after each update (J)
    seen: int = 0  # updates before the last sample

    def updates_before(self, t_s: float) -> int:
        return bisect.bisect_right(self.edges, t_s)


def make_devices(n: int, duration_s: float, rng: random.Random) -> list[Device]:
    increments = recorded_increments_j()
    devices = []
    for i in range(n):
        phase, period = rng.uniform(0, PERIOD_S), PERIOD_S * (1 + rng.uniform(-50e-6, 50e-6))
        count = int(duration_s / period) + 2
        edges = [phase + k * period + rng.gauss(0, 0.0002) for k in range(count)]
        steps = np.roll(increments, -i * len(increments) // n)[np.arange(count) % len(increments)]
        counter = 1000.0 + np.concatenate([[0.0], np.cumsum(steps)])
        dev = Device(FakeGpu(uuid=f"GPU-{i}"), edges, counter)
        dev.gpu.energy_j = lambda t, d=dev: float(d.counter_j[d.updates_before(t)])
        devices.append(dev)
    return devices


class Sim:
    """One poll thread over the devices; the fake clock is the simulation's time."""

    def __init__(self, devices: list[Device], rng: random.Random) -> None:
        self.devices = devices
        self.now = 0.0
        self.sample_t = 0.0
        fake = FakeNvml([d.gpu for d in devices], clock=lambda: self.sample_t)
        self.lib = NvmlLib(fake)
        self.lib.init()
        cost = json.loads(COST.read_text(encoding="utf-8"))["energy_20ms"]
        self.cost_new = quantile_sampler(cost["wall_at_update"], rng)
        self.cost_old = quantile_sampler(cost["wall_between_updates"], rng)
        self.cpu_s = 0.0  # poll-thread CPU after the warm-up
        self.reads = 0  # reads after the warm-up
        self.warmup_s = 0.0
        self.errors: list[float] = []
        self.dated: list[list[tuple[float, float]]] = [[] for _ in devices]  # (dated s, counter J)

    def read(self, i: int) -> tuple[float, float, float]:
        """Read device ``i`` now: (start, end, energy J); advances the clock by the read's cost."""
        dev = self.devices[i]
        start = self.now
        news = dev.updates_before(start) > dev.seen
        cost = self.cost_new() if news else self.cost_old()
        self.sample_t = start + cost / 2
        energy = self.lib.total_energy_j(dev.gpu)
        dev.seen = dev.updates_before(self.sample_t)
        self.now = start + cost
        if start >= self.warmup_s:
            self.cpu_s += cost
            self.reads += 1
        return start, self.now, energy

    def score(self, i: int, dated_s: float, warmup_s: float, energy_j: float) -> None:
        """Error of a dated update against the true update nearest to it."""
        self.dated[i].append((dated_s, energy_j))
        edges = self.devices[i].edges
        j = bisect.bisect_left(edges, dated_s)
        nearest = min((edges[k] for k in (j - 1, j) if 0 <= k < len(edges)), key=lambda e: abs(e - dated_s))
        if dated_s >= warmup_s:
            self.errors.append(abs(dated_s - nearest))


def run_baseline(sim: Sim, duration_s: float, warmup_s: float, rng: random.Random) -> None:
    grids = [GridClock() for _ in sim.devices]
    last: list[tuple[float, float] | None] = [None] * len(sim.devices)
    while sim.now < duration_s:
        t0 = sim.now
        values = [sim.read(i)[2] for i in range(len(sim.devices))]
        t_s = (t0 + sim.now) / 2
        for i, value in enumerate(values):
            prev = last[i]
            if prev is not None and value != prev[1]:
                sim.score(i, grids[i].date(prev[0], t_s), warmup_s, value)
            last[i] = (t_s, value)
        sim.now = max(sim.now, t0 + 0.02 * rng.uniform(0.75, 1.25))


class SimGridMeter:
    """The simulated GPUs as the sidecar's per-device meter (``GridMeter``): each read costs sim time."""

    fixed_grid = True

    def __init__(self, sim: Sim) -> None:
        self.sim = sim

    def read_device(self, index: int) -> float:
        return self.sim.read(index)[2]


def run_locked(sim: Sim, duration_s: float, warmup_s: float, seed: int) -> list[PhaseLock]:
    """The sidecar's own per-device scheduler (``PhasedReader``, as ``Poller`` runs it with the
    default 20 ms ``poll_interval_s`` for the search); scored on the readings it hands the timeline."""
    reader = PhasedReader(SimGridMeter(sim), len(sim.devices), poll_s=0.02, clock=lambda: sim.now, seed=seed)
    last: tuple[float, ...] | None = None
    while sim.now < duration_s:
        sim.now = max(sim.now, reader.next_due_s())
        for reading in reader.read_due():
            if last is not None:
                for i, (old, new) in enumerate(zip(last, reading.energy_j, strict=True)):
                    if new != old:  # the timeline sees device i's update at this reading
                        sim.score(i, reading.t_s, warmup_s, new)
            last = reading.energy_j
    return reader.locks


def update_energy_error_pct(sim: Sim, duration_s: float, warmup_s: float) -> tuple[float, float]:
    """p50 and p99 error of each true update's energy, the dated readings interpolated linearly (%)."""
    errors = []
    for dev, dated in zip(sim.devices, sim.dated, strict=True):
        t_d, e_d = np.array([d[0] for d in dated]), np.array([d[1] for d in dated])
        edges = np.asarray(dev.edges)
        keep = (edges > max(warmup_s, t_d[0])) & (edges < min(duration_s, t_d[-1]))
        idx = np.flatnonzero(keep)
        est = np.interp(edges[idx], t_d, e_d) - np.interp(edges[idx - 1], t_d, e_d)
        true = dev.counter_j[idx + 1] - dev.counter_j[idx]
        errors.extend(np.abs(est - true) / true * 100.0)
    return float(np.percentile(errors, 50)), float(np.percentile(errors, 99))


def report(name: str, sim: Sim, duration_s: float, warmup_s: float) -> tuple[float, float]:
    """Edge error and CPU over the scored part of the run (after the warm-up)."""
    updates = sum(d.updates_before(duration_s) - d.updates_before(warmup_s) for d in sim.devices)
    err_ms = np.asarray(sim.errors) * 1e3
    core_pct = 100.0 * sim.cpu_s / (duration_s - warmup_s)
    p50, p99 = float(np.percentile(err_ms, 50)), float(np.percentile(err_ms, 99))
    energy_p50, energy_p99 = update_energy_error_pct(sim, duration_s, warmup_s)
    print(
        f"{name:13s} dated updates {err_ms.size:6d}  edge error p50 {p50:5.2f} ms  p99 {p99:6.2f} ms  "
        f"reads/update {sim.reads / max(updates, 1):4.2f}  core % {core_pct:5.1f}  "
        f"energy/update error p50 {energy_p50:4.1f} p99 {energy_p99:5.1f} %"
    )
    return p99, core_pct


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n, duration_s, warmup_s = args.devices, args.duration_s, args.warmup_s
    print(
        f"{n} simulated GPUs, {duration_s:.0f} s (first {warmup_s:.0f} s not scored), costs from {COST.name}"
    )

    base = Sim(make_devices(n, duration_s, random.Random(args.seed)), random.Random(args.seed + 1))
    base.warmup_s = warmup_s
    run_baseline(base, duration_s, warmup_s, random.Random(args.seed + 2))
    report("baseline 20ms", base, duration_s, warmup_s)

    sim = Sim(make_devices(n, duration_s, random.Random(args.seed)), random.Random(args.seed + 1))
    sim.warmup_s = warmup_s
    locks = run_locked(sim, duration_s, warmup_s, args.seed)
    p99, core_pct = report("phase-locked", sim, duration_s, warmup_s)
    errs = [lk.phase_error_s for lk in locks]
    shown = " ".join("-" if e is None else f"{e * 1e3:.2f}" for e in errs)
    unlocks = sum(lk.unlocks for lk in locks)
    print(f"phase error per device (ms, half the room the bounds leave): {shown}; unlocks {unlocks}")
    print(f"devices {n} edge p99 {p99:.2f} ms | core % {core_pct:.1f}")


if __name__ == "__main__":
    main()
