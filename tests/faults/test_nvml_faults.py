"""Faults of the energy counter through the whole sidecar: NVML errors mid-run, a counter reset, the GPU lost.

The real :class:`~sidecar.meters.nvml.NvmlMeter` on the fake NVML library of
``tests/sidecar/meters/fake_nvml.py`` (an NVIDIA GPU cannot run here), polled by the
sidecar's own poller and ticked on a fake clock, with requests running. Each fault
is counted on /metrics, costs no record, and the sidecar recovers by itself (or, with
the GPU gone, says so on /readyz while it keeps answering).
"""

from __future__ import annotations

import math

import pynvml
from prometheus_client.parser import text_string_to_metric_families

from sidecar.app import Sidecar
from sidecar.attribution.events import Phase, RequestInfo, WorkEvent
from sidecar.config import SidecarConfig
from sidecar.meters.nvml import NvmlMeter
from sidecar.meters.nvml_lib import NvmlLib
from tests.sidecar.meters.fake_nvml import FakeGpu, FakeNvml, steady, with_reset
from tests.support import FakeClock

UUID = "GPU-11111111-2222-3333-4444-555555555555"
ENERGY_CALL = "nvmlDeviceGetTotalEnergyConsumption"


def exported(sidecar: Sidecar) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(sidecar.exporter.render().decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def tap(m: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, outcome: str) -> float:
    want = {("jouletrace_tap", name), ("outcome", outcome)}
    return sum(v for labels, v in m["jouletrace_tap_events_total"].items() if want <= set(labels))


def run(sidecar: Sidecar, clock: FakeClock, seconds: float, request: str | None = None) -> None:
    """Poll every 20 ms and tick every 100 ms; ``request`` runs 0.1-0.4 s into the stretch."""
    if request is not None:
        t = clock.t_s
        sidecar.add_request(RequestInfo(request, model="m", start_s=t + 0.1, end_s=t + 0.4, output_tokens=10))
        sidecar.add_work(WorkEvent(request, t + 0.1, t + 0.4, Phase.DECODE, 10.0))
    for k in range(round(seconds / 0.02)):
        clock.advance(0.02)
        sidecar.poller.read_once()
        if k % 5 == 4:
            sidecar.tick()


def test_nvml_errors_a_counter_reset_and_the_gpu_lost_mid_run() -> None:
    clock = FakeClock(0.0)
    energy = with_reset(steady(300.0, start_j=5000.0), at_s=4.0)  # the driver reloads at 4 s
    fake = FakeNvml([FakeGpu(uuid=UUID, energy_j=energy, lost_at_s=8.0)], clock)
    meter = NvmlMeter(None, lib=NvmlLib(fake), clock=clock)
    # the fixed poll schedule: one read per device per poll, so the errors counted are exact (the
    # phase-locked schedule's reads under errors: tests/sidecar/meters/test_phased.py)
    config = SidecarConfig(meter="nvml", settle_s=0.5, split="tokens", poll_schedule="fixed")
    sidecar = Sidecar(config, meter, clock=clock)
    try:
        run(sidecar, clock, 1.0, "before")
        assert sidecar.ready()[0]
        fake.fail[ENERGY_CALL] = pynvml.NVML_ERROR_UNKNOWN  # NVML errors for 0.5 s
        run(sidecar, clock, 0.5, "during-errors")
        del fake.fail[ENERGY_CALL]
        run(sidecar, clock, 2.5, "after-errors")  # recovers by itself; the counter resets at 4 s
        run(sidecar, clock, 1.0, "across-reset")
        run(sidecar, clock, 2.0, "after-reset")
        m = exported(sidecar)
        assert tap(m, "meter", "read_errors") == 25 and sidecar.ready()[0]
        assert sum(m["jouletrace_meter_resets_total"].values()) == 1
        run(sidecar, clock, 2.0, "gpu-lost")  # the GPU falls off the bus at 8 s
        sidecar.tick(seal_until_s=math.inf)
        ok, reason = sidecar.ready()
        assert not ok and "lost its device" in reason and UUID in reason
        m = exported(sidecar)
        assert tap(m, "meter", "device_lost") == 1 and sidecar.tick_failures == 0
        for rid in ("before", "during-errors", "after-errors", "across-reset", "after-reset"):
            rec = sidecar.lookup(rid)
            assert rec is not None and rec["final"] and rec["energy_j"] > 0, rid
        lost = sidecar.lookup("gpu-lost")  # its energy was never measured: final, marked, not 0 J unflagged
        assert lost is not None and (
            lost["energy_j"] > 0 or lost["attributes"].get("energy_unknown") == "true"
        )
        totals = sidecar.attributor.totals
        assert abs(totals.conservation_error_j) <= 1e-9 * totals.measured_j
        # 300 W for the 8 s measured, the reset's lost residue aside: no energy invented or lost
        measured = sum(m["hw_energy_joules_total"].values())
        assert 0.97 * 300.0 * 8.0 <= measured <= 300.0 * 8.0 + 1.0
    finally:
        sidecar.close()
