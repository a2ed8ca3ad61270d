"""Small simulated runs shared by the simulator's tests (module-scoped: built once)."""

from __future__ import annotations

import pytest

from sidecar.sim.run import SimConfig, SimRun, simulate
from sidecar.sim.workload import WorkloadConfig

SMALL = SimConfig(workload=WorkloadConfig(n_requests=40, burst_size=15, burst_gap_s=10.0))


@pytest.fixture(scope="session")
def small_run() -> SimRun:
    """40 heterogeneous requests in bursts, iteration events."""
    return simulate(SMALL, seed=7)


@pytest.fixture(scope="session")
def saturated_run() -> SimRun:
    """60 requests all at t=0: the batch limits bind."""
    return simulate(SimConfig(workload=WorkloadConfig(n_requests=60, arrivals="all-at-once")), seed=3)
