"""The step model: member truths add up, the decode cost bends with batch size, the cap holds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sidecar.attribution.events import Phase
from sidecar.errors import ConfigError
from sidecar.sim.gpu import GpuConfig, GpuModel
from sidecar.sim.scheduler import Member

MIXED_STEP = (
    Member("d1", Phase.DECODE, 1, 300),
    Member("d2", Phase.DECODE, 1, 1200),
    Member("p1", Phase.PREFILL, 510, 2510),
)


@pytest.mark.parametrize("split", ["floor", "equal", "shapley"])
def test_member_truths_sum_to_the_step_energy(split: str) -> None:
    gpu = GpuModel(GpuConfig(static_split=split), np.random.default_rng(0))  # type: ignore[arg-type]
    for _ in range(50):
        cost = gpu.step(MIXED_STEP)
        assert len(cost.member_j) == 3
        assert sum(cost.member_j) == pytest.approx(cost.energy_j, rel=1e-12)
        assert min(cost.member_j) > 0


def test_shapley_moves_static_power_from_decodes_to_the_prefill() -> None:
    equal = GpuModel(GpuConfig(static_split="equal"), np.random.default_rng(1)).step(MIXED_STEP)
    shapley = GpuModel(GpuConfig(static_split="shapley"), np.random.default_rng(1)).step(MIXED_STEP)
    assert shapley.energy_j == pytest.approx(equal.energy_j, rel=1e-12)
    assert shapley.member_j[2] > equal.member_j[2]
    assert shapley.member_j[0] < equal.member_j[0]


def test_floor_truth_shares_only_idle_power_times_step_time_equally() -> None:
    cfg = GpuConfig(energy_noise_sigma=0.0, time_jitter_sigma=0.0, power_cap_w=1e6)
    cost = GpuModel(cfg, np.random.default_rng(3)).step(MIXED_STEP)
    floor = cfg.idle_w * cost.tau_s / 3
    fixed = ((cfg.static_w - cfg.idle_w) * cfg.t_fixed_s + cfg.step_fixed_j) / 3
    d1_own = cfg.decode_token_j(2) + cfg.e_context_token_j * 300
    d1_time = cfg.t_decode_seq_s + cfg.t_context_token_s * 300
    assert cost.member_j[0] == pytest.approx(floor + fixed + d1_own + (cfg.static_w - cfg.idle_w) * d1_time)
    assert cost.member_j[2] > cost.member_j[1] > cost.member_j[0]  # the prefill chunk pays for its own time


def test_capped_floor_step_keeps_energy_and_grows_the_shared_floor() -> None:
    capped = GpuModel(GpuConfig(power_cap_w=300.0, energy_noise_sigma=0.0), np.random.default_rng(4))
    free = GpuModel(GpuConfig(power_cap_w=1e6, energy_noise_sigma=0.0), np.random.default_rng(4))
    a, b = capped.step(MIXED_STEP), free.step(MIXED_STEP)
    assert a.capped and not b.capped
    assert a.energy_j == pytest.approx(b.energy_j)
    assert sum(a.member_j) == pytest.approx(a.energy_j)
    assert a.member_j[0] > b.member_j[0]  # decodes share a longer floor
    assert a.member_j[2] < b.member_j[2]


def test_decode_token_cost_falls_with_batch_size_and_flattens() -> None:
    cfg = GpuConfig()
    e = [cfg.decode_token_j(n) for n in (1, 2, 4, 8, 16, 32, 64)]
    assert e[0] == pytest.approx(cfg.e_decode_token_1_j)
    assert all(a > b for a, b in itertools.pairwise(e))
    drops = np.diff(e)
    assert abs(drops[-1]) < abs(drops[0]) / 3  # flattens
    assert e[-1] > cfg.e_decode_token_inf_j


def test_power_never_exceeds_the_cap_and_energy_is_kept() -> None:
    cfg = GpuConfig(power_cap_w=500.0, energy_noise_sigma=0.0)
    gpu = GpuModel(cfg, np.random.default_rng(2))
    big = (Member("p", Phase.PREFILL, 512, 512),)
    costs = [gpu.step(big) for _ in range(20)]
    assert all(c.capped for c in costs)
    for c in costs:
        assert c.energy_j / c.tau_s == pytest.approx(500.0)
    uncapped = GpuModel(GpuConfig(energy_noise_sigma=0.0, power_cap_w=1e6), np.random.default_rng(2))
    free = [uncapped.step(big) for _ in range(20)]
    assert [c.energy_j for c in costs] == pytest.approx([c.energy_j for c in free])
    assert all(c.tau_s > f.tau_s for c, f in zip(costs, free, strict=True))


def test_step_time_varies_and_gaps_stay_in_range() -> None:
    gpu = GpuModel(GpuConfig(hiccup_prob=0.0), np.random.default_rng(3))
    taus = [gpu.step(MIXED_STEP).tau_s for _ in range(100)]
    assert np.std(taus) / np.mean(taus) > 0.02
    gaps = [gpu.gap_s() for _ in range(200)]
    assert min(gaps) >= 0.5e-3 and max(gaps) <= 3e-3


def test_bad_config_names_the_knob() -> None:
    with pytest.raises(ConfigError, match=r"gpu\.idle_w"):
        GpuConfig(idle_w=-1.0).check()
    with pytest.raises(ConfigError, match=r"gpu\.static_split"):
        GpuConfig(static_split="whatever").check()  # type: ignore[arg-type]
