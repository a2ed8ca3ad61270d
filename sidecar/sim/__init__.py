"""A simulated GPU serving LLM requests with continuous batching, with exact ground truth.

Used by tests, by ``benchmarks/attribution_accuracy.py`` and by the CPU demo::

    run = simulate(SimConfig(), seed=1)      # steps, events, requests, truth, counter
    meter = SimMeter(run, clock=fake_clock)  # an EnergyMeter over the run's counter
    feeder = SimFeeder(run, meter.t0)        # work events and finished requests as time passes

Modules: ``workload`` (requests), ``scheduler`` (vLLM-style continuous
batching), ``gpu`` (time, energy and ground truth of a step), ``counter``
(exact energy trace, NVML-like counter), ``run`` (``simulate``), ``meter``
(``SimMeter``, ``SimFeeder``).
"""

from __future__ import annotations

from sidecar.sim.counter import CounterConfig, EnergyTrace, SimCounter
from sidecar.sim.gpu import GpuConfig, GpuModel, StepCost
from sidecar.sim.meter import SimFeeder, SimMeter
from sidecar.sim.run import SimConfig, SimRun, simulate
from sidecar.sim.scheduler import Member, SchedulerConfig, Step
from sidecar.sim.workload import RequestKind, SimRequest, WorkloadConfig

__all__ = [
    "CounterConfig",
    "EnergyTrace",
    "GpuConfig",
    "GpuModel",
    "Member",
    "RequestKind",
    "SchedulerConfig",
    "SimConfig",
    "SimCounter",
    "SimFeeder",
    "SimMeter",
    "SimRequest",
    "SimRun",
    "Step",
    "StepCost",
    "WorkloadConfig",
    "simulate",
]
