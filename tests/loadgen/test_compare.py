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


@pytest.mark.parametrize("figure", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("side", ["baseline", "run"])
def test_a_figure_that_is_not_a_number_is_refused_not_passed(
    tmp_path: Path, figure: str, side: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _results(tmp_path, "good", j_per_token=1.0)
    bad = tmp_path / "bad.json"
    bad.write_text('{"headline": {"j_per_token": FIGURE}}'.replace("FIGURE", figure))
    pair = [str(good), str(bad)] if side == "run" else [str(bad), str(good)]
    assert main(["loadgen", "compare", *pair]) == 2
    assert f"bad.json: not valid JSON ({figure} is not a JSON number)" in capsys.readouterr().err


@pytest.mark.parametrize("figure", [-5.0, 0, 0.0, True, "0.2"])
@pytest.mark.parametrize("side", ["baseline", "run"])
def test_a_figure_that_is_not_a_positive_number_is_refused_naming_file_and_metric(
    tmp_path: Path, figure: object, side: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _results(tmp_path, "good", j_per_token=1.0, task_j_per_unit={"gpqa": 0.2})
    bad = _results(tmp_path, "bad", j_per_token=1.0, task_j_per_unit={"gpqa": figure})
    pair = [str(good), str(bad)] if side == "run" else [str(bad), str(good)]
    assert main(["loadgen", "compare", *pair]) == 2
    err = capsys.readouterr().err
    assert "bad/results.json: headline 'gpqa.j_per_unit': expected a finite number > 0" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "content",
    [
        '{"headline": {"j_per_token": 1.0, "task_j_per_unit": [1]}}',
        '{"headline": {"task_j_per_unit": "x"}}',
        '{"headline": {"j_per_token": 1' + "0" * 400 + "}}",
        '{"headline": {"j_per_token": 1' + "0" * 5000 + "}}",
        "[" * 100_000,
        '{"headline": {}}'.encode("utf-16"),
        b'{"headline": {"j_per_token": "caf\xe9"}}',
    ],
    ids=["tasks-list", "tasks-string", "huge-int", "over-4300-digits", "deep", "utf-16", "latin-1"],
)
def test_a_results_file_of_the_wrong_shape_or_encoding_is_bad_input_naming_it(
    tmp_path: Path, content: str | bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _results(tmp_path, "good", j_per_token=1.0)
    bad = tmp_path / "bad.json"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        bad.write_text(content)
    assert main(["loadgen", "compare", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jouletrace: {bad}")
    assert len(err.strip().splitlines()) == 1


def test_a_results_json_that_is_a_folder_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _results(tmp_path, "good", j_per_token=1.0)
    (tmp_path / "odd" / "results.json").mkdir(parents=True)
    assert main(["loadgen", "compare", str(good), str(tmp_path / "odd")]) == 2
    assert "odd/results.json: cannot read the results file" in capsys.readouterr().err


@pytest.mark.parametrize("threshold", ["nan", "inf", "Infinity%", "-1%", "-0.1"])
def test_a_threshold_that_is_not_a_finite_number_at_least_0_is_refused(
    tmp_path: Path, threshold: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _results(tmp_path, "base", j_per_token=1.0)
    run = _results(tmp_path, "run", j_per_token=100.0)
    assert main(["loadgen", "compare", str(base), str(run), f"--max-regression={threshold}"]) == 2
    assert f"--max-regression {threshold!r}: must be a finite number >= 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "run_headline",
    [{"task_j_per_unit": {"lm-arena-chat": 9.9}}, {}],
    ids=["different-tasks", "no-energy"],
)
def test_nothing_compared_does_not_pass(
    tmp_path: Path, run_headline: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    base = _results(tmp_path, "base", task_j_per_unit={"gpqa": 0.3})
    run = _results(tmp_path, "run", **run_headline)
    assert main(["loadgen", "compare", str(base), str(run)]) == 2
    out = capsys.readouterr().out
    assert "OK" not in out
    assert out.strip().splitlines()[-1] == "FAIL: nothing compared: no metric has a figure in both files"
