"""Per-device phase-locked reads through the real NvmlMeter, over the fake NVML (no GPU here).

The counter is the recorded H200 trace (tests/data/nvml_h200_full.csv): at any
time the fake returns the value the 10 ms recording had seen by then, so each
update happens at the recorded poll that first saw it. The real update came
between that poll and the one before (the recording's own resolution), so a
dated edge is scored by how far it falls outside that recorded window. Each energy read advances a
fake clock by the recorded read cost (3.3 ms). The poller runs by hand on that clock.
"""

from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np
import pytest
from pynvml import NVML_ERROR_GPU_IS_LOST, NVML_ERROR_UNKNOWN

from sidecar.meters.nvml import NvmlMeter
from sidecar.meters.nvml_lib import NvmlLib
from sidecar.poller import Poller
from sidecar.timeline import Timeline
from tests.sidecar.meters.fake_nvml import FakeGpu, FakeNvml

TRACE = Path(__file__).resolve().parents[2] / "data" / "nvml_h200_full.csv"
READ_S = 0.0033  # one energy read on the H200 (tests/data/nvml_h200_read_cost.json)


def recorded_steps() -> tuple[list[float], list[float], list[float]]:
    """(time of the poll that first saw each recorded change, counter J after it, the poll before),
    the first row as the base at t = 0: the real update lies between the two polls."""
    rows = [ln.split(",") for ln in TRACE.read_text(encoding="utf-8").splitlines() if ln[:1].isdigit()]
    t_s = np.array([float(r[0]) for r in rows])
    energy_j = np.array([float(r[2]) for r in rows])
    changed = np.flatnonzero(np.diff(energy_j) != 0) + 1
    seen, before = t_s[changed].tolist(), t_s[changed - 1].tolist()
    return [0.0, *seen], [float(energy_j[0]), *energy_j[changed].tolist()], [0.0, *before]


class Rig:
    """Fake clock, the recorded counter on ``devices`` GPUs (each shifted by ``shift_s``), a poller."""

    def __init__(self, devices: int = 2, shift_s: float = 0.037, jump_at_s: float = 1e9) -> None:
        self.now = 0.0
        self.times, self.values, self.before = recorded_steps()
        jump = 0.043  # at jump_at_s the grid moves by 43 ms (a driver reload)
        self.times = [t + jump * (t >= jump_at_s) for t in self.times]
        self.before = [b + jump * (t >= jump_at_s) for b, t in zip(self.before, self.times, strict=True)]
        self.edges = [[t + i * shift_s for t in self.times] for i in range(devices)]
        self.windows = [
            (b + i * shift_s, t + i * shift_s)
            for i in range(devices)
            for b, t in zip(self.before, self.times, strict=True)
        ]
        self.gpus = [FakeGpu(uuid=f"GPU-{i}", energy_j=self._counter(i)) for i in range(devices)]
        self.nvml = FakeNvml(self.gpus, clock=lambda: self.now)
        meter = NvmlMeter(lib=NvmlLib(self.nvml), clock=lambda: self.now)
        self.poller = Poller(
            meter, poll_s=0.02, status_s=0.5, clock=lambda: self.now, seed=1, phase_lock=True
        )
        self.timeline = Timeline(meter.devices)

    def _counter(self, i: int):  # type: ignore[no-untyped-def]
        def energy_j(t: float) -> float:
            self.now += READ_S  # the read burns its time; the counter is sampled mid-read
            return self.values[max(bisect.bisect_right(self.edges[i], t + READ_S / 2) - 1, 0)]

        return energy_j

    def run(self, until_s: float) -> None:
        phased = self.poller.phased
        assert phased is not None
        while self.now < until_s and self.poller.lost is None:
            self.now = max(self.now, min(phased.next_due_s(), until_s))
            self.poller.read_once()
            while self.poller.readings:
                self.timeline.add(self.poller.readings.popleft())


def dating_errors_s(rig: Rig, after_s: float) -> np.ndarray:
    """Each timeline edge after ``after_s``: how far outside the recorded window of the nearest update."""
    t, _, _ = rig.timeline.edges_after(after_s)
    lo, hi = (np.array(sorted(w[k] for w in rig.windows)) for k in (0, 1))
    j = np.clip(np.searchsorted(hi, t), 0, hi.size - 1)
    outside = np.maximum(np.maximum(lo[j] - t, t - hi[j]), 0.0)
    prev = np.maximum(j - 1, 0)
    return np.minimum(outside, np.maximum(np.maximum(lo[prev] - t, t - hi[prev]), 0.0))


def test_the_recorded_h200_counter_is_dated_near_the_recorded_updates_at_a_third_of_the_reads() -> None:
    rig = Rig(devices=2)
    rig.run(71.0)
    phased = rig.poller.phased
    assert phased is not None
    errors = dating_errors_s(rig, 15.0)
    assert errors.size > 600  # both devices' updates reached the timeline (every 2nd while steady)
    # Issue 10's target is p99 <= 5 ms against the true updates. Here the updates are the recording's
    # own 10 ms polls (some came late: tests/data/README.md), jittering about +-1 ms around the grid;
    # measured here: p50 ~1.5 ms, p90 ~5 ms, p99 ~7-9 ms outside the recorded windows. Not yet the target.
    assert float(np.percentile(errors, 50)) <= 0.003
    assert float(np.percentile(errors, 90)) <= 0.006
    assert float(np.percentile(errors, 99)) <= 0.010
    reads = max(lock.reads for lock in phased.locks)
    assert reads / 710 < 1.6  # 710 recorded updates per device; a 20 ms poll reads 5 per update
    assert rig.poller.phase is not None and all(locked for locked, _ in rig.poller.phase)
    # nothing lost on the way: the timeline holds every joule the counters gained
    last = [rig.values[bisect.bisect_right(e, rig.now - 0.25) - 1] for e in rig.edges]
    assert rig.timeline.energy_j.sum() == pytest.approx(sum(last) - 2 * rig.values[0], abs=200.0)


def test_a_grid_jump_drops_the_lock_falls_back_and_locks_again() -> None:
    rig = Rig(devices=1, jump_at_s=20.0)
    rig.run(20.0)
    lock = rig.poller.phased.locks[0]  # type: ignore[union-attr]
    assert lock.locked and lock.unlocks == 0
    rig.run(40.0)
    assert lock.unlocks >= 1 and lock.locked
    assert float(np.percentile(dating_errors_s(rig, 30.0), 99)) <= 0.005


def test_nvml_errors_fall_back_to_the_fixed_period_and_it_locks_again() -> None:
    rig = Rig(devices=1)
    rig.run(15.0)
    lock = rig.poller.phased.locks[0]  # type: ignore[union-attr]
    assert lock.locked
    rig.nvml.fail["nvmlDeviceGetTotalEnergyConsumption"] = NVML_ERROR_UNKNOWN
    rig.run(16.0)
    assert not lock.locked and rig.poller.phase == ((False, None),)  # searching: the fixed period
    assert 30 <= rig.poller.errors <= 60  # one retry per poll period, not a busy loop
    del rig.nvml.fail["nvmlDeviceGetTotalEnergyConsumption"]
    rig.run(35.0)
    assert lock.locked
    assert float(np.percentile(dating_errors_s(rig, 30.0), 99)) <= 0.005


def test_a_lost_gpu_stops_the_reads_and_says_unlocked() -> None:
    rig = Rig(devices=2)
    rig.run(12.0)
    rig.gpus[1].lost_at_s = 12.0
    rig.run(13.0)
    assert rig.poller.lost is not None and "GPU-1" in rig.poller.lost
    assert rig.poller.phase == ((False, None), (False, None))
    assert NVML_ERROR_GPU_IS_LOST  # the fake raises the real pynvml error for it
