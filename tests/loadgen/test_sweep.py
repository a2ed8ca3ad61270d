"""Sweeps: levels within the batch bound, no level run into an unusable folder, sweep.json strict JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen.config import MAX_BATCH, MAX_REQUESTS, RunConfig
from loadgen.errors import InputError
from loadgen.runner import RunOutcome
from loadgen.sweep import parse_levels, run_sweep


@pytest.mark.parametrize("flag", ["--concurrency", "--batch-caps"])
def test_a_sweep_level_above_the_batch_bound_is_refused_naming_the_flag(flag: str) -> None:
    assert parse_levels(f"1,{MAX_BATCH}", flag) == [1, MAX_BATCH]
    with pytest.raises(InputError, match=f"{flag} '4,99999999': levels must be whole numbers > 0 and <="):
        parse_levels("4,99999999", flag)


def test_a_sweep_levels_default_request_count_is_within_the_requests_bound() -> None:
    assert max(8, 4 * MAX_BATCH) <= MAX_REQUESTS  # concurrency levels
    assert max(64, 8 * MAX_BATCH) <= MAX_REQUESTS  # batch-cap levels


def test_a_sweep_into_an_unusable_folder_runs_no_level(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    ran: list[RunConfig] = []

    def run_one(cfg: RunConfig) -> RunOutcome:
        ran.append(cfg)
        raise AssertionError("no level should run")

    with pytest.raises(InputError, match="--out"):
        run_sweep(RunConfig(out_dir=str(blocker / "sweep")), run_one, concurrency=[1, 2])
    assert ran == []


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def test_sweep_json_is_strict_json_with_a_figure_that_is_not_finite_as_null(tmp_path: Path) -> None:
    def run_one(cfg: RunConfig) -> RunOutcome:
        phase = {"phase": "mixed", "unit": "token", "window_energy_j": None, "per_request_sum_j": 1e308 * 10,
                 "window_units": 10, "avg_power_w": float("nan"), "failed": 0, "errors": {}}  # fmt: skip
        return RunOutcome(cfg, [], [phase], [], {}, [])

    run_sweep(RunConfig(out_dir=str(tmp_path), sidecar_url="", otlp_endpoint=""), run_one, concurrency=[2])
    points = json.loads((tmp_path / "sweep.json").read_text(), parse_constant=_refuse)["points"]
    assert points[0]["batch"] == 2
    assert points[0]["j_per_token"] is None and points[0]["avg_power_w"] is None
