"""Provisional energy: the request's work priced by the current coefficients, labelled."""

from __future__ import annotations

import math

import pytest

from sidecar.attribution.records import DeviceSnapshot, FitSnapshot, Snapshot
from sidecar.proxy.energy import Prices, RequestWork, prices_from_snapshot, provisional_energy

WORK = RequestWork(prompt_tokens=10, output_tokens=4, shared_s=2.0, shared_steps=2.5)


def test_fitted_prices_sum_floor_share_steps_tokens_and_attention() -> None:
    prices = Prices(
        "measured",
        True,
        floor_w=50.0,
        j_per_step=1.0,
        j_per_prefill_token=0.1,
        j_per_decode_token=0.5,
        j_per_prefill_pair=0.001,
        j_per_context_token=0.01,
        r2=0.96,
    )
    got = provisional_energy(prices, WORK)
    context = 4 * 10 + 4 * 3 / 2  # output token i attends over 10 + i
    expected = 50 * 2.0 + 1.0 * 2.5 + 0.1 * 10 + 0.5 * 4 + 0.001 * 55 + 0.01 * context
    assert got.energy_j == pytest.approx(expected)
    assert got.uncertainty_j == pytest.approx(expected * math.sqrt(0.04))
    assert got.to_json() | {"joules": 0} == {
        "joules": 0,
        "uncertainty_joules": round(got.uncertainty_j, 6),
        "final": False,
        "source": "measured",
        "basis": "fitted",
    }


def test_before_the_first_fit_the_price_is_the_power_share_with_full_uncertainty() -> None:
    got = provisional_energy(Prices("estimate", False, power_w=30.0), WORK)
    assert (got.energy_j, got.uncertainty_j, got.basis, got.source) == (60.0, 60.0, "power-share", "estimate")


def test_prices_come_from_the_snapshot_fit_once_it_has_ticks() -> None:
    device = DeviceSnapshot("0", "cpu", "cpu", 0.0, 0.0, power_w=25.0)
    fit = FitSnapshot(
        static_w=40.0, j_per_decode_token=0.2, j_per_prefill_context_token=0.003, r2=0.9, ticks=5
    )
    prices = prices_from_snapshot(Snapshot(1.0, "estimate", "fitted", devices=(device,), fit=fit))
    assert (prices.fitted, prices.floor_w, prices.j_per_prefill_pair, prices.power_w) == (
        True,
        40.0,
        0.003,
        25.0,
    )
    unfitted = prices_from_snapshot(Snapshot(1.0, "measured", "fitted", devices=(device,)))
    assert not unfitted.fitted and unfitted.source == "measured"


def test_a_non_finite_price_never_yields_a_non_finite_figure() -> None:
    got = provisional_energy(Prices("measured", True, floor_w=float("nan")), WORK)
    assert got.energy_j == 0.0 and math.isfinite(got.uncertainty_j)


def test_with_the_coefficients_covariance_the_uncertainty_is_the_works_standard_deviation() -> None:
    cov = [[0.0] * 5 for _ in range(5)]
    cov[2][2] = 0.01  # decode J/token: sd 0.1 J
    cov[0][0] = 0.04  # J/step: sd 0.2 J
    prices = Prices("measured", True, j_per_decode_token=0.5, work_cov=tuple(tuple(r) for r in cov))
    got = provisional_energy(prices, WORK)
    assert got.uncertainty_j == pytest.approx(math.sqrt((4 * 0.1) ** 2 + (2.5 * 0.2) ** 2))
