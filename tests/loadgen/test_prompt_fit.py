"""Prompt lengths as the server counts them: each prompt fitted to its drawn target.

The counting server here answers ``/tokenize`` the way vLLM does, with the tiny Llama's
own tokenizer and chat template (``apply_chat_template(..., add_generation_prompt=True)``
for chat, ``encode`` for completions); the real vLLM is checked in ``test_vllm_e2e.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from loadgen.factories import FactoryOptions, make_requests
from loadgen.prompt_fit import fit_prompts, tokenize_body
from loadgen.prompts import PromptBuilder
from loadgen.records import Request
from loadgen.tasks import load_tasks, scale_task

PROMPT_SCALE = 0.5  # the demo's: GPQA's prompts are longer than its fixed parts (choices, template)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from servers.models.cli import default_dir
    from servers.models.llm import build_llama

    return AutoTokenizer.from_pretrained(str(build_llama(default_dir("llama"))))


def _count(tok: Any, body: dict[str, Any]) -> int:
    if "messages" in body:
        text = tok.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=False)
        return len(tok.encode(text, add_special_tokens=False))  # as vLLM: template, then encode
    return len(tok.encode(body["prompt"], add_special_tokens=True))


@pytest.fixture
async def server(tokenizer: Any) -> AsyncIterator[str]:
    async def tokenize(request: web.Request) -> web.Response:
        return web.json_response({"count": _count(tokenizer, await request.json())})

    app = web.Application()
    app.router.add_post("/tokenize", tokenize)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def _requests(task: str, n: int) -> list[Request]:
    spec = scale_task(load_tasks()[task], 0.05, 1024, PROMPT_SCALE)
    rng = np.random.default_rng(3)
    opts = FactoryOptions(model="tiny", max_model_len=1024)
    return make_requests(spec, n, rng, PromptBuilder(rng, tokens_per_word=1.3), opts, task)


@pytest.mark.parametrize("task", ["lm-arena-chat", "gpqa", "sourcegraph-fim"])
async def test_fitted_prompts_hit_their_targets_within_2_percent_as_the_tokenizer_counts(
    server: str, tokenizer: Any, task: str
) -> None:
    reqs = _requests(task, 40)
    before = [_count(tokenizer, tokenize_body(r, "tiny")) for r in reqs]
    async with aiohttp.ClientSession() as session:
        stats = await fit_prompts(session, server, "tiny", reqs, tokens_per_word=1.3)
    assert stats.fitted == 40 and stats.failed == 0
    target = np.asarray([r.target_prompt_tokens for r in reqs], dtype=float)
    measured = np.asarray([_count(tokenizer, tokenize_body(r, "tiny")) for r in reqs], dtype=float)
    assert measured.mean() == pytest.approx(target.mean(), rel=0.02)
    assert np.median(measured) == pytest.approx(np.median(target), rel=0.02)
    # per request: exact, or a few tokens off (a word can merge with its neighbour), or floored
    # at the fixed parts (choices, instruction, template) when the target is below them
    floored = [r.slot is not None and len(r.slot.words) <= r.slot.min_words for r in reqs]
    off = np.abs(measured - target)[~np.asarray(floored)]
    assert (off <= np.maximum(3, 0.02 * target[~np.asarray(floored)])).all()
    assert stats.exact >= 20 and stats.floored == sum(floored) <= 4
    assert abs(np.mean(before) - target.mean()) > abs(measured.mean() - target.mean())


async def test_a_target_below_the_fixed_parts_is_floored_and_counted(server: str) -> None:
    (req,) = _requests("gpqa", 1)
    req.target_prompt_tokens = 5  # below GPQA's choices + instruction + chat template
    async with aiohttp.ClientSession() as session:
        stats = await fit_prompts(session, server, "tiny", [req])
    assert stats.floored == 1 and stats.exact == 0
    assert req.slot is not None and len(req.slot.words) == req.slot.min_words == 5


async def test_without_a_tokenize_endpoint_the_request_is_sent_as_built(tokenizer: Any) -> None:
    (req,) = _requests("lm-arena-chat", 1)
    before = dict(req.body)
    async with aiohttp.ClientSession() as session:
        stats = await fit_prompts(session, "http://127.0.0.1:9", "tiny", [req])
    assert stats.failed == 1 and req.body == before
