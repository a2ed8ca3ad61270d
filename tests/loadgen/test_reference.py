"""The study's published figures shipped as package data, matched to the served model and GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loadgen.reference import SOURCE, gpu_family, model_matches, published, task_reference
from loadgen.report_study import study_range, summary_cell

SHARED = Path(__file__).resolve().parents[3] / "shared" / "study" / "published.yaml"


def test_the_package_ships_the_published_figures_with_their_source() -> None:
    data = published()
    assert data["per_task_min_energy"]["lm-arena-chat"]["h100"]["j_per_token"]["median"] == 0.26
    assert "2601.22076" in SOURCE
    if SHARED.exists():  # the team's copy of the study facts; the package's must be the same
        assert yaml.safe_load(SHARED.read_text()) == data


@pytest.mark.parametrize(
    ("task", "unit", "gpu", "lo", "hi"),
    [
        ("lm-arena-chat", "token", "h100", 0.070, 2.06),
        ("gpqa", "token", "b200", 0.028, 2.38),
        ("sourcegraph-fim", "token", "b200", 0.11, 3.80),
        ("text-to-image", "image", "h100", 412, 7551),
        ("text-to-video", "video", "b200", 26400, 1160000),
    ],
)
def test_every_task_has_the_studys_range_per_gpu(
    task: str, unit: str, gpu: str, lo: float, hi: float
) -> None:
    ref = task_reference(task)
    assert ref is not None and ref["unit"] == unit
    assert study_range(ref, gpu) == (lo, hi)


def test_the_named_llama_figure_appears_only_for_the_served_model_on_the_same_gpu() -> None:
    ref = task_reference(
        "lm-arena-chat", model="meta-llama/Llama-3.1-8B-Instruct", gpu="NVIDIA H100 80GB HBM3"
    )
    assert ref is not None
    (named,) = ref["named"]
    assert (named["model"], named["gpu"], named["j_per_unit"]) == ("Llama-3.1-8B-Instruct", "h100", 0.070)
    assert task_reference("lm-arena-chat", model="tiny-llama", gpu="NVIDIA H100")["named"] == []  # type: ignore[index]
    assert (
        task_reference("lm-arena-chat", model="meta-llama/Llama-3.1-8B-Instruct", gpu="cpu-model")["named"]
        == []
    )  # type: ignore[index]


def test_a_diffusion_model_matches_its_hub_name() -> None:
    ref = task_reference("text-to-video", model="THUDM/CogVideoX-2b", gpu="NVIDIA B200")
    assert ref is not None
    assert [(n["model"], n["j_per_unit"]) for n in ref["named"]] == [("CogVideoX-2B", 26400.0)]


def test_matching_rules() -> None:
    assert model_matches("Llama-3.1-8B-Instruct", "meta-llama/llama-3.1-8b-instruct")
    assert not model_matches("Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-70B-Instruct")
    assert model_matches("Qwen3-Coder-30B-A3B (2xH100)", "Qwen/Qwen3-Coder-30B-A3B-Instruct")
    assert not model_matches("CogVideoX-2B", "")
    assert gpu_family("NVIDIA H100 80GB HBM3") == "h100" and gpu_family("cpu-model estimate") == ""


def test_unknown_tasks_have_no_reference_and_cells_render() -> None:
    assert task_reference("nope") is None
    assert summary_cell({"median": 0.26, "range": [0.07, 2.06]}) == "0.26 [0.07-2.06]"
    assert summary_cell({"range": [0.2, 0.2]}) == "[0.2]"
    assert summary_cell(None) == "-"


def test_the_plots_put_the_run_beside_the_studys_ranges_and_curves(tmp_path: Path) -> None:
    from loadgen.plots import plot_run, plot_sweep

    def task(name: str, unit: str, j: float, p50: float) -> dict[str, object]:
        per_response = {"p50": p50, "p90": 2 * p50}
        return {"task": name, "unit": unit, "study": task_reference(name), "j_per_unit": j,
                "energy_per_response_j": per_response}  # fmt: skip

    tasks = [task("lm-arena-chat", "token", 0.3, 8.0), task("text-to-image", "image", 150.0, 150.0)]
    phases = [
        {"phase": "lm-arena-chat", "unit": "token", "j_per_unit_study": None, "j_per_unit_window": 0.3},
        {"phase": "text-to-image", "unit": "image", "j_per_unit_study": 150.0, "j_per_unit_window": 150.0},
    ]
    written = plot_run({"phases": phases, "tasks": tasks, "power_w": []}, tmp_path)
    assert {p.name for p in written} == {"energy_per_response.png", "vs_study.png"}
    assert all(p.stat().st_size > 1000 for p in written)
    points = [
        {"batch": b, "j_per_token": 1 / b, "tokens_per_j": b, "tasks": ["lm-arena-chat"]} for b in (4, 16)
    ]
    (sweep,) = plot_sweep(points, tmp_path)
    assert sweep.name == "j_per_token_vs_batch.png" and sweep.stat().st_size > 1000
