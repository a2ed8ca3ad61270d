"""The sidecar on the NVML meter (over the fake NVML: no GPU here) with phase-locked reads, on a fake clock.

Two GPUs whose counters step every 100 ms on their own phases; each energy read
advances the clock by the H200's 3.3 ms. The poller runs by hand, as its thread
would: the read that is due, then a tick every 100 ms.
"""

from __future__ import annotations

import math

import pynvml
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.app import Sidecar
from sidecar.config import SidecarConfig
from sidecar.meters.nvml import NvmlMeter
from sidecar.meters.nvml_lib import NvmlLib
from tests.sidecar.meters.fake_nvml import FakeGpu, FakeNvml

READ_S = 0.0033
PERIOD_S = 0.1
POWER_W = (300.0, 500.0)
PHASE_S = (0.0123, 0.0617)


class Clock:
    def __init__(self) -> None:
        self.t_s = 0.0

    def __call__(self) -> float:
        return self.t_s


def counter(clock: Clock, power_w: float, phase_s: float):  # type: ignore[no-untyped-def]
    def energy_j(t: float) -> float:
        clock.t_s += READ_S  # the read burns its time; the counter is sampled mid-read
        updates = max(math.floor((t + READ_S / 2 - phase_s) / PERIOD_S) + 1, 0)
        return 1000.0 + power_w * PERIOD_S * updates

    return energy_j


def make(schedule: str) -> tuple[Clock, Sidecar]:
    clock = Clock()
    gpus = [FakeGpu(uuid=f"GPU-{i}", energy_j=counter(clock, POWER_W[i], PHASE_S[i])) for i in range(2)]
    meter = NvmlMeter(lib=NvmlLib(FakeNvml(gpus, clock=clock)), clock=clock)
    config = SidecarConfig(meter="nvml", poll_schedule=schedule, settle_s=0.5, ledger_path="")
    return clock, Sidecar(config, meter, clock=clock)


def drive(clock: Clock, sidecar: Sidecar, until_s: float) -> int:
    """Read as the poller's thread would, tick every 100 ms; return the energy reads done."""
    reads, next_tick_s = 0, 0.1
    while clock.t_s < until_s:
        phased = sidecar.poller.phased
        due_s = phased.next_due_s() if phased is not None else clock.t_s + 0.02
        if next_tick_s <= due_s:
            clock.t_s = max(clock.t_s, next_tick_s)
            sidecar.tick()
            next_tick_s += 0.1
            continue
        clock.t_s = max(clock.t_s, due_s)
        before = clock.t_s
        sidecar.poller.read_once()
        reads += round((clock.t_s - before) / READ_S)
    return reads


def gauge(sidecar: Sidecar, name: str) -> dict[str, float]:
    text = sidecar.exporter.render().decode()
    return {
        s.labels["hw_id"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name
    }


def test_phase_locked_nvml_keeps_the_energy_reads_fewer_and_says_it_is_locked() -> None:
    clock, sidecar = make("phase-lock")
    assert gauge(sidecar, "jouletrace_meter_phase_locked") == {"GPU-0": 0.0, "GPU-1": 0.0}
    drive(clock, sidecar, 10.0)
    reads = drive(clock, sidecar, 30.0)
    assert reads / (2 * 200) < 0.8  # a 20 ms poll would read both GPUs 5 times per update
    assert gauge(sidecar, "jouletrace_meter_phase_locked") == {"GPU-0": 1.0, "GPU-1": 1.0}
    assert all(0.0 <= e < 0.005 for e in gauge(sidecar, "jouletrace_meter_phase_error_seconds").values())
    period = sidecar.snapshot().stats.update_period_s
    assert period == pytest.approx(0.1, abs=1e-4)
    energy = gauge(sidecar, "hw_energy_joules_total")
    for i, gpu in enumerate(("GPU-0", "GPU-1")):  # within one update (and the trailing read) of the truth
        assert energy[gpu] == pytest.approx(POWER_W[i] * 30.0, abs=POWER_W[i] * 0.3)


def test_the_fixed_schedule_reads_every_poll_and_has_no_phase_metric() -> None:
    clock, sidecar = make("fixed")
    assert sidecar.poller.phased is None
    reads = drive(clock, sidecar, 5.0)
    assert reads / (2 * 50) > 3.0
    assert gauge(sidecar, "jouletrace_meter_phase_locked") == {}
    assert gauge(sidecar, "jouletrace_meter_phase_error_seconds") == {}


def test_a_gpu_whose_reads_keep_failing_does_not_stop_the_others_energy() -> None:
    """Adversarial probe: the readings waited until every GPU had been read; with GPU-1 failing
    (NVML_ERROR_UNKNOWN, retried) GPU-0's dated updates piled up (1,028 after 180 s) and the
    timeline stopped for both."""
    clock, failing = Clock(), [False]
    energy_1 = counter(clock, POWER_W[1], PHASE_S[1])

    def flaky(t: float) -> float:
        if failing[0]:
            clock.t_s += READ_S
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        return float(energy_1(t))

    gpus = [
        FakeGpu(uuid="GPU-0", energy_j=counter(clock, POWER_W[0], PHASE_S[0])),
        FakeGpu("GPU-1", energy_j=flaky),
    ]
    meter = NvmlMeter(lib=NvmlLib(FakeNvml(gpus, clock=clock)), clock=clock)
    config = SidecarConfig(meter="nvml", poll_schedule="phase-lock", settle_s=0.5, ledger_path="")
    sidecar = Sidecar(config, meter, clock=clock)
    drive(clock, sidecar, 5.0)
    failing[0] = True
    drive(clock, sidecar, 35.0)
    phased = sidecar.poller.phased
    assert phased is not None and max(len(p) for p in phased._pending) < 5
    assert sidecar.timeline.last_edge_t > 34.0
    energy = gauge(sidecar, "hw_energy_joules_total")
    assert energy["GPU-0"] == pytest.approx(POWER_W[0] * 35.0, abs=POWER_W[0] * 0.3)
    failing[0] = False  # back: its 30 s come as one gain with its next good read
    drive(clock, sidecar, 40.0)
    energy = gauge(sidecar, "hw_energy_joules_total")
    assert energy["GPU-1"] == pytest.approx(POWER_W[1] * 40.0, abs=POWER_W[1] * 0.3)
    sidecar.close()
