"""Provisional energy: the request's work priced by the current coefficients, labelled."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sidecar.attribution.fit import WORK as FIT_WORK
from sidecar.attribution.records import DeviceSnapshot, FitSnapshot, Snapshot
from sidecar.attribution.rules import EqualRule
from sidecar.contracts.proxy_wire import PRICE_WORK
from sidecar.proxy.energy import Prices, RequestWork, provisional_energy, unavailable, work_vector
from sidecar.proxy.prices import price_json, prices_from_snapshot
from tests.sidecar.proxy.conftest import fitted_rule

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
    assert got.uncertainty_j == pytest.approx(expected * math.sqrt(0.04))  # no interval given: coarse
    assert (got.low_j, got.high_j) == pytest.approx((expected * 0.608, expected * 1.392))
    assert got.to_json() | {"joules": 0, "low_joules": 0, "high_joules": 0} == {
        "joules": 0,
        "uncertainty_joules": round(got.uncertainty_j, 6),
        "low_joules": 0,
        "high_joules": 0,
        "uncertainty_basis": "r2",
        "final": False,
        "source": "measured",
        "basis": "fitted",
    }


def test_before_the_first_fit_the_price_is_the_power_share_with_full_uncertainty() -> None:
    got = provisional_energy(Prices("estimate", False, power_w=30.0), WORK)
    assert (got.energy_j, got.uncertainty_j, got.basis, got.source) == (60.0, 60.0, "power-share", "estimate")
    assert got.to_json()["low_joules"] is None and got.to_json()["uncertainty_basis"] == "power-share"


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


def test_the_interval_is_the_rules_own_for_the_requests_work_as_the_final_record_gets() -> None:
    rule = fitted_rule()
    snap = Snapshot(1.0, "measured", "fitted", fit=rule.fit.snapshot())
    got = provisional_energy(prices_from_snapshot(snap, rule), WORK)
    w = np.array(work_vector(WORK))
    assert PRICE_WORK == FIT_WORK  # the sheet's terms are the fit's, in its order
    assert dict(zip(FIT_WORK, w.tolist(), strict=True)) == {
        "steps": 2.5,
        "prefill": 10.0,
        "decode": 4.0,
        "prefill_pairs": 55.0,
        "decode_context": 46.0,
        "denoise": 0.0,
    }
    c = rule.fit.coef
    assert c is not None
    assert got.energy_j == pytest.approx(c.floor_w * 2.0 + float(c.work @ w))
    # the records' interval (lifecycle: rule.interval_j(energy, work, unexplained)), with the part the
    # model leaves unexplained estimated from its R^2 (the record knows it once sealed)
    unexplained_j = got.energy_j * math.sqrt(1 - rule.fit.r2)
    assert (got.low_j, got.high_j) == pytest.approx(
        rule.interval_j(got.energy_j, w, unexplained_j), rel=1e-12
    )
    half_j = 1.96 * float(np.sqrt(w @ rule.fit.cov @ w)) + unexplained_j
    assert got.high_j == pytest.approx(got.energy_j + half_j) and got.uncertainty_j == pytest.approx(
        half_j / 1.96
    )
    assert got.to_json()["uncertainty_basis"] == "covariance" and 0 < got.uncertainty_j < got.energy_j


def test_a_rule_without_intervals_leaves_the_coarse_figure() -> None:
    rule = fitted_rule()
    snap = Snapshot(1.0, "measured", "fitted", fit=rule.fit.snapshot())
    got = provisional_energy(prices_from_snapshot(snap, EqualRule()), WORK)
    assert got.uncertainty_basis == "r2" and got.uncertainty_j == pytest.approx(
        got.energy_j * math.sqrt(1 - rule.fit.r2)
    )


def test_the_sheet_survives_json_and_prices_the_same() -> None:
    rule = fitted_rule()
    snap = Snapshot(1.0, "measured", "fitted", fit=rule.fit.snapshot())
    sheet = prices_from_snapshot(snap, rule)
    parsed = Prices.parse(json.loads(json.dumps(price_json(snap, rule))))
    assert parsed == sheet and provisional_energy(parsed, WORK) == provisional_energy(sheet, WORK)


def test_a_rule_without_intervals_sends_no_covariance() -> None:
    rule = fitted_rule()
    snap = Snapshot(1.0, "measured", "fitted", fit=rule.fit.snapshot())
    assert price_json(snap, EqualRule())["cov"] is None and price_json(snap, None)["cov"] is None


def test_without_a_sheet_the_energy_object_says_why_and_has_no_figure() -> None:
    got = unavailable("sidecar http://127.0.0.1:9464 unreachable")
    assert got == {
        "joules": None,
        "final": False,
        "basis": "unavailable",
        "reason": "sidecar http://127.0.0.1:9464 unreachable",
    }
