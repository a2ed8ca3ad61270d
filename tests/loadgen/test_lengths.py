"""Output-length distributions: fitted to the study's statistics, sampled faithfully, clipped at the cap."""

from __future__ import annotations

import numpy as np
import pytest

from loadgen.lengths import fit_lognormal, targets_from_yaml
from loadgen.tasks import load_tasks, scale_task

LLM_TASKS = ["lm-arena-chat", "gpqa", "sourcegraph-fim", "image-chat", "video-chat"]


@pytest.mark.parametrize("task", LLM_TASKS)
def test_fitted_distribution_lands_within_25_percent_of_every_published_statistic(task: str) -> None:
    spec = load_tasks()[task]
    assert spec.output is not None
    for stat, ratio in spec.output.residuals.items():
        assert 0.75 <= ratio <= 1.25, (task, stat, ratio)


def test_code_completion_fit_matches_its_exact_published_mean_p50_p90_p99_within_5_percent() -> None:
    out = load_tasks()["sourcegraph-fim"].output
    assert out is not None
    assert set(out.targets) == {"mean", "p50", "p90", "p99"}
    for stat, ratio in out.residuals.items():
        assert ratio == pytest.approx(1.0, abs=0.05), stat


@pytest.mark.parametrize("task", LLM_TASKS)
def test_sample_moments_match_the_fitted_distribution(task: str) -> None:
    out = load_tasks()[task].output
    assert out is not None
    x = out.sample(np.random.default_rng(1), 60_000)
    assert x.mean() == pytest.approx(out.mean(), rel=0.03)
    assert np.percentile(x, 50) == pytest.approx(out.quantile(0.5), rel=0.04, abs=1)
    assert np.percentile(x, 90) == pytest.approx(out.quantile(0.9), rel=0.04, abs=1)


def test_samples_never_exceed_the_cap_nor_go_below_one_token() -> None:
    fit = fit_lognormal({"mean": 900, "p50": 400}, cap=1000)
    x = fit.sample(np.random.default_rng(0), 20_000)
    assert x.max() == 1000 and x.min() >= 1
    assert (x == 1000).mean() > 0.05  # a heavy tail piles up at the cap, as in the study


def test_ranges_become_their_geometric_midpoint_and_text_statistics_are_ignored() -> None:
    t = targets_from_yaml({"mean": 700, "p50_range": [100, 400], "p99": "up to the cap"})
    assert t == {"mean": 700.0, "p50": 200.0}


def test_scaling_multiplies_lengths_and_caps_and_the_context_limit_clips_them() -> None:
    chat = load_tasks()["lm-arena-chat"]
    small = scale_task(chat, 0.1)
    assert small.output is not None and chat.output is not None
    assert small.output.mean() == pytest.approx(0.1 * chat.output.mean(), rel=0.02)
    assert small.output.cap == 410
    tight = scale_task(chat, 1.0, max_model_len=512)
    assert tight.prompt is not None and tight.output is not None
    assert tight.prompt.cap + tight.output.cap <= 512


def test_a_fit_needs_a_mean_or_median() -> None:
    with pytest.raises(ValueError, match="mean or p50"):
        fit_lognormal({"p90": 10}, cap=100)
