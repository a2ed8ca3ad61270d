"""SimMeter is an EnergyMeter over the run's counter; SimFeeder releases work once, on the clock."""

from __future__ import annotations

import numpy as np

from sidecar.meters.base import EnergyMeter, EnergySource
from sidecar.sim.meter import SimFeeder, SimMeter
from sidecar.sim.run import SimRun


class FakeClock:
    def __init__(self, t_s: float) -> None:
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s


def test_meter_reads_the_counter_shifted_onto_the_clock(small_run: SimRun) -> None:
    clock = FakeClock(1000.0)
    meter = SimMeter(small_run, clock=clock)
    assert isinstance(meter, EnergyMeter)
    assert meter.t0 == 1000.0
    assert meter.source is EnergySource.SIMULATED
    (device,) = meter.devices
    assert (device.id, device.type, device.name) == ("GPU-sim-0", "gpu", "simulated H100-class GPU")
    for sim_t in (0.0, 0.5, 3.3, small_run.duration_s + 5.0):
        clock.t_s = 1000.0 + sim_t
        reading = meter.read()
        assert reading.t_s == clock.t_s
        assert reading.energy_j == (small_run.counter.value_at(sim_t),)
    meter.close()


def test_status_reports_power_and_utilization(small_run: SimRun) -> None:
    clock = FakeClock(0.0)
    meter = SimMeter(small_run, clock=clock, t0=-10.0)
    step = small_run.steps[len(small_run.steps) // 2]
    clock.t_s = -10.0 + (step.t0_s + step.t1_s) / 2
    (status,) = meter.status()
    assert status.power_w is not None and status.power_w > small_run.config.gpu.idle_w
    assert status.utilization is not None and 0.0 < status.utilization <= 1.0
    assert status.power_limit_w == small_run.config.gpu.power_cap_w
    clock.t_s = -10.0 + small_run.duration_s + 10.0
    (after,) = meter.status()
    assert after.power_w == small_run.config.gpu.idle_w and after.utilization == 0.0


def test_feeder_releases_each_event_and_request_once_on_the_clock(small_run: SimRun) -> None:
    t0 = 500.0
    feeder = SimFeeder(small_run, t0)
    events, requests = [], []
    for now in np.arange(t0, t0 + small_run.duration_s + 0.5, 0.1):
        ev, rq = feeder.due(float(now))
        assert all(e.t1_s <= now for e in ev)
        assert all(r.end_s is not None and r.end_s <= now for r in rq)
        events += ev
        requests += rq
    assert feeder.done
    assert feeder.due(1e9) == ([], [])
    assert len(events) == len(small_run.events)
    assert [(e.request_id, e.t0_s, e.t1_s, e.phase, e.units, e.context_tokens) for e in events] == [
        (e.request_id, e.t0_s + t0, e.t1_s + t0, e.phase, e.units, e.context_tokens) for e in small_run.events
    ]
    assert sorted(r.request_id for r in requests) == sorted(r.request_id for r in small_run.requests)
    original = {r.request_id: r for r in small_run.requests}
    for r in requests:
        assert r.start_s == original[r.request_id].start_s + t0  # type: ignore[operator]
        assert r.end_s == original[r.request_id].end_s + t0  # type: ignore[operator]


def test_feeder_does_not_release_the_future(small_run: SimRun) -> None:
    feeder = SimFeeder(small_run, 0.0)
    first = small_run.events[0]
    assert feeder.due(first.t1_s - 1e-9) == ([], [])
    ev, _ = feeder.due(first.t1_s)
    assert ev and ev[0].t1_s == first.t1_s
    assert not feeder.done
