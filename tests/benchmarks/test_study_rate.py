"""benchmarks/study_rate.py: the study's busiest GPUs, as responses per second (an upper estimate)."""

from __future__ import annotations

import pytest

from loadgen.reference import published
from tests.benchmarks.bench_module import load_bench

bench = load_bench("study_rate")


def figures() -> dict[str, object]:
    """A published.yaml-shaped dict: two tasks' ranges, per-model figures, one of them on 2 GPUs."""
    return {
        "gpu_power_w": {"llm": {"h100": {"range": [200, 700]}, "b200": {"range": [300, 1000]}}},
        "per_task_min_energy": {
            "chat": {
                "h100": {"j_per_response": {"range": [35, 900]}},
                "b200": {"j_per_response": {"range": [20, 500]}},
            },
            "code": {
                "h100": {"models": {"Coder (2xH100)": {"j_per_token": 0.2, "j_per_response": 50}}},
                "b200": {"models": {"Coder": {"j_per_response": 40}, "Big": {"j_per_token": 1.0}}},
            },
        },
    }


def test_power_over_the_lowest_energy_per_response_per_gpu() -> None:
    rates = bench.study_rate(figures())
    assert rates["h100"].j_per_response == 25.0  # 50 J on two GPUs beats the chat range's 35
    assert rates["h100"].responses_per_s == pytest.approx(700 / 25)
    assert rates["b200"].j_per_response == 20.0 and rates["b200"].power_w == 1000.0
    assert rates["b200"].node_spans_per_s(2) == pytest.approx(1000 / 20 * bench.NODE_GPUS * 2)


def test_the_shipped_figures_give_the_b200_the_higher_rate() -> None:
    rates = bench.study_rate(published())
    lowest = min(published()["per_task_min_energy"]["lm-arena-chat"]["b200"]["j_per_response"]["range"])
    assert rates["b200"].j_per_response == lowest
    assert rates["b200"].responses_per_s > rates["h100"].responses_per_s > 0


def test_the_line_for_scale_puts_a_rate_against_the_estimate() -> None:
    b200 = bench.study_rate(published())["b200"]
    traced = b200.node_spans_per_s(2)
    line = bench.for_scale(traced * 10, 1e-4)
    assert "an upper estimate" in line and "per H100" in line and "per B200" in line
    assert "is 10x that" in line and f"spend {traced * 1e-4:.1%} of a core" in line
