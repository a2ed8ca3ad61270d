"""The request generator: seeded, kinds within their ranges, three arrival processes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sidecar.errors import ConfigError
from sidecar.sim.workload import DEFAULT_KINDS, SimRequest, WorkloadConfig, generate


def _gen(seed: int = 0, **kw: Any) -> list[SimRequest]:
    return generate(WorkloadConfig(**kw), np.random.default_rng(seed))


def test_same_seed_same_workload_and_other_seed_differs() -> None:
    assert _gen(1) == _gen(1)
    assert _gen(1) != _gen(2)


def test_each_kind_stays_in_its_token_ranges_and_all_kinds_appear() -> None:
    ranges = {k.name: k for k in DEFAULT_KINDS}
    requests = _gen(3, n_requests=300)
    assert {r.kind for r in requests} == set(ranges)
    for r in requests:
        kind = ranges[r.kind]
        assert kind.prompt_tokens[0] <= r.prompt_tokens <= kind.prompt_tokens[1]
        assert kind.output_tokens[0] <= r.output_tokens <= kind.output_tokens[1]
    assert len({r.request_id for r in requests}) == 300


def test_weights_select_the_mix() -> None:
    requests = _gen(4, n_requests=200, weights=(("decode-heavy", 3.0), ("mixed", 1.0)))
    kinds = [r.kind for r in requests]
    assert "prefill-heavy" not in kinds
    assert 0.6 < kinds.count("decode-heavy") / len(kinds) < 0.9


def test_all_at_once_arrives_at_zero() -> None:
    assert all(r.arrival_s == 0.0 for r in _gen(5, n_requests=20, arrivals="all-at-once"))


def test_poisson_arrivals_are_sorted_at_about_the_rate() -> None:
    t = np.array([r.arrival_s for r in _gen(6, n_requests=2000, arrivals="poisson", rate_per_s=10.0)])
    assert np.all(np.diff(t) >= 0)
    assert 9.0 < len(t) / t[-1] < 11.0


def test_bursts_are_separated_by_the_idle_gap() -> None:
    t = np.array([r.arrival_s for r in _gen(7, n_requests=90, burst_size=30, burst_gap_s=25.0)])
    gaps = np.diff(t)
    assert list(np.flatnonzero(gaps >= 25.0)) == [29, 59]
    assert gaps[29] == pytest.approx(25.0)


@pytest.mark.parametrize(
    "kw",
    [
        {"n_requests": -1},
        {"arrivals": "uniform"},
        {"rate_per_s": 0.0},
        {"weights": (("nonsense", 1.0),)},
        {"weights": (("mixed", 0.0),)},
        {"burst_size": 0},
    ],
)
def test_bad_config_names_the_knob(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="workload"):
        _gen(0, **kw)
