"""The client against a fast fake OpenAI server: streaming timings, ids, tracing, faults."""

from __future__ import annotations

import time

import aiohttp
import pytest

from loadgen.client import probe_server, send
from loadgen.config import RunConfig
from loadgen.errors import UnreachableError
from loadgen.records import Request, Result
from loadgen.runner import run
from loadgen.tracing import ClientTracer
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import ReceivedSpan, TapOutput
from tests.loadgen.fake_server import FakeServer
from tests.support import free_port


def _chat(rid: str, tokens: int, content: str = "hello there") -> Request:
    body = {
        "model": "fake-llm",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return Request(
        id=rid,
        task="lm-arena-chat",
        api="chat",
        path="/v1/chat/completions",
        body=body,
        target_output_tokens=tokens,
    )


async def test_a_streamed_request_records_ttft_inter_token_latencies_and_exact_tokens() -> None:
    server = FakeServer(token_s=0.005)
    url = await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            t0 = time.perf_counter()
            res = await send(session, url, Result(_chat("req-1", 12), 0.0), t0, ClientTracer(None), 10)
    finally:
        await server.stop()
    assert res.ok and res.output_tokens == 12 and len(res.chunk_s) == 12
    assert res.ttft_s is not None and 0.004 < res.ttft_s < 0.5
    assert len(res.itl_s) == 11 and all(0.003 < x < 0.2 for x in res.itl_s)
    assert res.e2e_s is not None and res.e2e_s >= res.ttft_s + sum(res.itl_s) - 1e-6
    assert res.response_id == "chatcmpl-req-1" and res.finish_reason == "length"
    headers = server.seen[0]["headers"]
    assert headers["x-request-id"] == "req-1"
    assert headers["traceparent"].split("-")[1] == res.trace_id


async def test_failures_and_timeouts_are_recorded_per_request_without_stopping_the_others() -> None:
    server = FakeServer(token_s=0.001)
    url = await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            t0, tracer = time.perf_counter(), ClientTracer(None)
            bad = await send(session, url, Result(_chat("bad", 4, "FAIL please"), 0.0), t0, tracer, 10)
            hung = await send(session, url, Result(_chat("hung", 4, "HANG"), 0.0), t0, tracer, 0.3)
            good = await send(session, url, Result(_chat("good", 4), 0.0), t0, tracer, 10)
    finally:
        await server.stop()
    assert not bad.ok and bad.status == 500 and bad.error is not None and bad.error.startswith("HTTP 500")
    assert not hung.ok and hung.error == "timeout after 0.3 s"
    assert good.ok and good.output_tokens == 4


async def test_a_connection_closed_unanswered_is_sent_again_once() -> None:
    server = FakeServer(token_s=0.0)
    url = await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            res = await send(session, url, Result(_chat("d", 3, "DROP"), 0.0), time.perf_counter(),
                             ClientTracer(None), 10)  # fmt: skip
    finally:
        await server.stop()
    assert res.ok and res.retries == 1 and res.output_tokens == 3


async def test_the_progress_bar_gets_one_task_per_phase_and_one_advance_per_request() -> None:
    class Bar:
        def __init__(self) -> None:
            self.tasks: dict[int, tuple[str, int]] = {}
            self.done: dict[int, int] = {}

        def add_task(self, name: str, total: int) -> int:
            self.tasks[len(self.tasks)] = (name, total)
            return len(self.tasks) - 1

        def advance(self, task: int) -> None:
            self.done[task] = self.done.get(task, 0) + 1

    server = FakeServer(token_s=0.0)
    url = await server.start()
    bar = Bar()
    try:
        cfg = RunConfig(
            mix="study-llm", server_url=url, sidecar_url="", otlp_endpoint="", requests=9, scale=0.02
        )
        await run(cfg, bar)
    finally:
        await server.stop()
    assert [name for name, _ in bar.tasks.values()] == ["lm-arena-chat", "gpqa", "sourcegraph-fim"]
    assert all(bar.done[i] == total for i, (_, total) in bar.tasks.items())


async def test_an_unreachable_server_is_a_clear_error_naming_url_and_flag() -> None:
    port = free_port()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(UnreachableError, match=rf"cannot reach http://127.0.0.1:{port} .*--server-url"):
            await probe_server(session, f"http://127.0.0.1:{port}", "--server-url")


async def test_a_run_stops_before_sending_anything_when_the_sidecar_is_unreachable() -> None:
    server = FakeServer()
    url = await server.start()
    try:
        cfg = RunConfig(
            mix="study-llm",
            server_url=url,
            sidecar_url=f"http://127.0.0.1:{free_port()}",
            requests=4,
            scale=0.02,
        )
        with pytest.raises(UnreachableError, match="cannot reach the sidecar"):
            await run(cfg)
    finally:
        await server.stop()
    assert server.seen == []


async def test_client_spans_reach_an_otlp_receiver_with_the_task_and_the_propagated_trace_id() -> None:
    collected: list[ReceivedSpan] = []

    class Collect:
        def handle(self, span: ReceivedSpan, out: TapOutput) -> bool:
            collected.append(span)
            return True

    receiver = OtlpReceiver([Collect()], host="127.0.0.1", port=0)
    port = receiver.start()
    server = FakeServer(token_s=0.0)
    url = await server.start()
    try:
        cfg = RunConfig(
            mix="study-llm",
            server_url=url,
            sidecar_url="",
            otlp_endpoint=f"127.0.0.1:{port}",
            requests=6,
            scale=0.02,
            arrivals="concurrency:3",
        )
        outcome = await run(cfg)
        receiver.due(0.0)
        spans = collected
    finally:
        await server.stop()
        receiver.stop()
    sent = {r.request.id: r.trace_id for r in outcome.results}
    assert outcome.meta["client_spans"] == {
        "endpoint": f"127.0.0.1:{port}", "exported": 6, "failed": 0, "resent": 0, "flushed": True,
        "errors": [],
    }  # fmt: skip
    got = {s.attributes["jouletrace.request.id"]: s for s in spans}
    assert set(got) == set(sent)
    for rid, span in got.items():
        assert span.trace_id == sent[rid]
        assert span.attributes["jouletrace.task"] == rid.split("-", 1)[1].rsplit("-", 1)[0]
    by_id = {h["headers"]["x-request-id"]: h["headers"]["traceparent"] for h in server.seen}
    assert all(by_id[rid].split("-")[1] == tid for rid, tid in sent.items())
