"""Reading each request's record back from the sidecar (``fetch_records``), over real HTTP (aiohttp)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from loadgen.records import Request, Result
from loadgen.sidecar_client import fetch_records
from tests.loadgen.fake_server import serving


def _result(rid: str, task: str) -> Result:
    req = Request(id=rid, task=task, api="chat", path="/v1/chat/completions", body={})
    return Result(request=req, target_s=0.0, finished_s=1.0)


async def _fetch(
    records: dict[str, list[dict[str, Any]]], results: list[Result], wait_s: float, label_wait_s: float = 10.0
) -> list[int]:
    """Serve each id's records in turn (the last one repeats); return how often each id was read."""
    reads = {rid: 0 for rid in records}

    async def record(request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        if rid not in records:
            return web.json_response({}, status=404)
        reads[rid] += 1
        return web.json_response(records[rid][min(reads[rid], len(records[rid])) - 1])

    app = web.Application()
    app.router.add_get("/v1/requests/{rid}", record)
    async with serving(app) as url, aiohttp.ClientSession() as session:
        await fetch_records(session, url, results, wait_s, poll_s=0.05, label_wait_s=label_wait_s)
    return [reads[r.request.id] for r in results]


def test_a_final_record_still_unlabelled_is_read_again_until_the_late_task_arrives() -> None:
    """The sidecar labels a final record at its next tick when our client span came after it."""
    unlabelled = {"final": True, "task": "unknown", "energy_j": 3.0}
    labelled = {**unlabelled, "task": "gpqa"}
    results = [_result("a", "gpqa")]
    reads = asyncio.run(_fetch({"a": [unlabelled, unlabelled, labelled]}, results, wait_s=10.0))
    assert results[0].energy == labelled and reads == [3]


def test_a_final_record_whose_task_never_comes_is_taken_after_a_bounded_wait() -> None:
    results = [_result("a", "gpqa"), _result("b", "gpqa")]
    records = {"a": [{"final": True, "task": "unknown"}], "b": [{"final": True, "task": "gpqa"}]}
    reads = asyncio.run(_fetch(records, results, wait_s=10.0, label_wait_s=1.0))
    assert results[0].energy == {"final": True, "task": "unknown"} and results[1].energy is not None
    assert reads[1] == 1 and 2 <= reads[0] < 40  # b at once; a polled for the late-task wait only (1 s)


def test_with_no_client_span_delivered_an_unlabelled_final_record_is_taken_at_once() -> None:
    results = [_result("a", "gpqa")]
    reads = asyncio.run(_fetch({"a": [{"final": True, "task": "unknown"}]}, results, 10.0, label_wait_s=0.0))
    assert results[0].energy == {"final": True, "task": "unknown"} and reads == [1]
