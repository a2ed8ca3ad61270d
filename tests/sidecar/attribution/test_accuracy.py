"""The claim: on a GPU whose per-request energy is known, the fitted split is close and far
better than the study's output-tokens rule (benchmarks/attribution_accuracy.py has the full run)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sidecar.meters.base import DeviceInfo
from sidecar.offline import attribute_offline
from sidecar.sim.run import SimConfig, SimRun, simulate


@pytest.fixture(scope="module")
def run() -> SimRun:
    base = SimConfig()
    return simulate(replace(base, workload=replace(base.workload, n_requests=200, start_s=1.0)), seed=7)


def p95_error(run: SimRun, rule: str) -> float:
    res = attribute_offline(
        run.counter.values_at,
        DeviceInfo("GPU-sim-0", "sim"),
        run.events,
        run.requests,
        duration_s=run.duration_s,
        rule=rule,
    )
    rel = [abs(res.records[rid].energy_j - truth) / truth for rid, truth in run.truth_j.items()]
    return float(np.percentile(rel, 95))


def test_fitted_rule_p95_error_is_under_five_percent_and_three_times_better_than_output_tokens(
    run: SimRun,
) -> None:
    fitted = p95_error(run, "fitted")
    study = p95_error(run, "output-tokens")
    assert fitted < 0.05
    assert study / fitted >= 3.0
