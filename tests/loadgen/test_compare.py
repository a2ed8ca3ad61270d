"""The regression gate: non-zero exit and the metric named when energy per unit got worse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sidecar.cli import main


def _results(tmp_path: Path, name: str, **headline: Any) -> Path:
    d = tmp_path / name
    d.mkdir()
    h = {"j_per_token": None, "j_per_image": None, "j_per_video": None, "task_j_per_unit": {}} | headline
    (d / "results.json").write_text(json.dumps({"headline": h}))
    return d


def test_a_run_within_the_threshold_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _results(tmp_path, "base", j_per_token=0.20, task_j_per_unit={"gpqa": 0.2})
    run = _results(tmp_path, "run", j_per_token=0.215, task_j_per_unit={"gpqa": 0.18})
    assert main(["loadgen", "compare", str(base), str(run), "--max-regression", "10%"]) == 0
    assert "OK" in capsys.readouterr().out


def test_a_worse_j_per_token_fails_and_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _results(tmp_path, "base", j_per_token=0.20, j_per_image=400.0)
    run = _results(tmp_path, "run", j_per_token=0.23, j_per_image=390.0)
    assert main(["loadgen", "compare", str(base / "results.json"), str(run), "--max-regression", "10%"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: j_per_token got worse by more than 10%" in out
    assert "+15.00%  REGRESSION" in out


@pytest.mark.parametrize("metric", ["j_per_image", "j_per_video"])
def test_worse_diffusion_energy_fails(
    tmp_path: Path, metric: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _results(tmp_path, "base", **{metric: 1000.0})
    run = _results(tmp_path, "run", **{metric: 1200.0})
    assert main(["loadgen", "compare", str(base), str(run), "--max-regression", "0.1"]) == 1
    assert f"FAIL: {metric}" in capsys.readouterr().out


def test_a_per_task_regression_is_named_by_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _results(tmp_path, "base", j_per_token=0.2, task_j_per_unit={"gpqa": 0.2, "lm-arena-chat": 0.3})
    run = _results(tmp_path, "run", j_per_token=0.2, task_j_per_unit={"gpqa": 0.3, "lm-arena-chat": 0.3})
    assert main(["loadgen", "compare", str(base), str(run)]) == 1
    assert "FAIL: gpqa.j_per_unit" in capsys.readouterr().out


def test_a_metric_missing_on_one_side_is_reported_not_silently_passed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _results(tmp_path, "base", j_per_token=0.2, j_per_image=300.0)
    run = _results(tmp_path, "run", j_per_token=0.2)
    assert main(["loadgen", "compare", str(base), str(run)]) == 0
    assert "not compared" in capsys.readouterr().out


def test_bad_inputs_exit_2_with_the_file_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _results(tmp_path, "base", j_per_token=0.2)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert main(["loadgen", "compare", str(base), str(broken)]) == 2
    assert "broken.json:1: not valid JSON" in capsys.readouterr().err
    assert main(["loadgen", "compare", str(base), str(base), "--max-regression", "ten"]) == 2
    assert main(["loadgen", "compare", str(base), str(tmp_path / "nope")]) == 2
