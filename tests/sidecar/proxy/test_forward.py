"""The proxy in front of a fake OpenAI server: passthrough, learning, energy in the answer."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from sidecar.attribution.events import Phase
from sidecar.proxy import forward
from tests.sidecar.proxy.conftest import Proxied, drain

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _chat(**fields: object) -> dict[str, object]:
    return {
        "model": "m",
        "messages": [{"role": "user", "content": "one two three"}],
        "max_tokens": 4,
        **fields,
    }


def _events(text: str) -> list[object]:
    out: list[object] = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_a_stream_without_usage_is_relayed_without_the_usage_chunk_the_proxy_asked_for(
    proxied: Proxied,
) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{proxied.url}/v1/chat/completions",
            json=_chat(stream=True),
            headers={"traceparent": TRACEPARENT},
        ) as r,
    ):
        text = await r.text()
        rid = r.headers["X-Request-Id"]
        assert r.status == 200 and r.headers["X-Jouletrace-Record-Url"] == f"{proxied.records}/{rid}"
    events = _events(text)
    assert events[-1] == "[DONE]" and len(events) == 5
    assert all("usage" not in e for e in events[:-1] if isinstance(e, dict))
    upstream = proxied.fake.seen[-1]
    assert upstream["body"]["stream_options"] == {"include_usage": True}
    assert upstream["headers"]["traceparent"] == TRACEPARENT and upstream["headers"]["x-request-id"] == rid


async def test_a_client_that_asked_for_usage_gets_it_with_a_provisional_energy_object(
    proxied: Proxied,
) -> None:
    body = _chat(stream=True, stream_options={"include_usage": True}, user="acme")
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{proxied.url}/v1/chat/completions", json=body, headers={"X-Request-Id": "client-id-7"}) as r,
    ):
        events = _events(await r.text())
        assert r.headers["X-Request-Id"] == "client-id-7"
    usage_chunk = events[-2]
    assert isinstance(usage_chunk, dict) and usage_chunk["usage"]["completion_tokens"] == 4
    energy = usage_chunk["energy"]
    assert energy["final"] is False and energy["source"] == "estimate" and energy["basis"] == "fitted"
    assert energy["joules"] > 0 and 0 < energy["uncertainty_joules"] < energy["joules"]
    work, infos = await drain(proxied.tap)
    assert [e.phase for e in work] == [Phase.PREFILL] + [Phase.DECODE] * 3
    assert infos[-1].request_id == "client-id-7" and infos[-1].attributes["jouletrace.tenant"] == "acme"
    assert (infos[-1].prompt_tokens, infos[-1].output_tokens) == (6, 4)  # the fake: words of the JSON


async def test_a_plain_completion_gets_energy_in_its_body_and_a_header(proxied: Proxied) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{proxied.url}/v1/completions",
            json={"model": "m", "prompt": "hi", "max_tokens": 3},
            headers={"X-Tenant": "team-a", "X-Jouletrace-Task": "text-conversation"},
        ) as r,
    ):
        doc = await r.json()
        assert float(r.headers["X-Jouletrace-Energy-Joules"]) == doc["energy"]["joules"] > 0
    assert (
        doc["usage"] == {"prompt_tokens": 1, "completion_tokens": 3} and doc["choices"][0]["text"] == "w w w "
    )
    _, infos = await drain(proxied.tap)
    assert infos[-1].task == "text-conversation" and infos[-1].attributes["jouletrace.tenant"] == "team-a"


async def test_other_paths_and_upstream_errors_pass_through_unchanged(proxied: Proxied) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{proxied.url}/v1/models") as r:
            assert r.status == 200 and (await r.json())["data"][0]["id"] == "fake-llm"
        async with s.post(
            f"{proxied.url}/v1/chat/completions", json=_chat(messages=[{"content": "FAIL"}])
        ) as r:
            assert r.status == 500 and (await r.json()) == {"error": {"message": "injected failure"}}
            # it keeps no record (no work reached an engine): no record URL that would answer 404 for ever
            assert r.headers["X-Request-Id"] and "X-Jouletrace-Record-Url" not in r.headers
        async with s.get(f"{proxied.url}/no/such/path?x=1") as r:
            assert r.status == 404
    work: list[object] = []
    for _ in range(100):  # the sidecar's ticks, until the failed request is forgotten
        work += proxied.tap.due(time.monotonic())[0]
        if proxied.tap.live_requests == 0:
            break
        await asyncio.sleep(0.01)
    assert proxied.tap.live_requests == 0 and work == []  # the failed request did no work


async def test_hostile_headers_are_replaced_or_dropped_and_counted(proxied: Proxied) -> None:
    bad = {"X-Request-Id": "id with spaces", "X-Tenant": "t" * 500, "traceparent": "junk"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{proxied.url}/v1/chat/completions", json=_chat(user=12), headers=bad) as r,
    ):
        assert r.status == 200 and r.headers["X-Request-Id"].startswith("jt-")
    assert proxied.fake.seen[-1]["headers"]["traceparent"] == "junk"  # propagated as is; only not learned
    counts = proxied.tap.stats().events
    for field in ("request_id", "tenant", "traceparent", "user"):
        assert counts[("proxy", field)] == 1


async def test_a_body_over_the_limit_is_refused_with_413(proxied: Proxied) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{proxied.url}/v1/chat/completions", json=_chat(messages=[{"content": "x" * 10_000}])) as r,
    ):
        assert r.status == 413 and "proxy_max_body_bytes" in (await r.json())["error"]["message"]
    assert proxied.tap.stats().events[("proxy", "too_large")] == 1 and proxied.fake.seen == []


async def test_bodies_held_at_once_are_bounded_a_request_beyond_gets_503(
    proxied: Proxied, monkeypatch: pytest.MonkeyPatch
) -> None:
    """60 clients sending 7 MB bodies together grew the proxy to 853 MB: the bodies held at once are
    bounded; one request alone is always taken (whatever its size under proxy_max_body_bytes)."""
    monkeypatch.setattr(forward, "BODIES_HELD_BYTES", 2_000)
    proxied.fake.token_s = 0.15  # the first answer takes 0.6 s: its body stays held meanwhile
    big = _chat(messages=[{"role": "user", "content": "x" * 1_500}])
    async with aiohttp.ClientSession() as s:
        first = asyncio.ensure_future(s.post(f"{proxied.url}/v1/chat/completions", json=big))
        await asyncio.sleep(0.2)
        async with s.post(f"{proxied.url}/v1/chat/completions", json=big) as second:
            assert second.status == 503 and (await second.json())["error"]["type"] == "proxy_busy"
        async with await first as r:
            assert r.status == 200
        async with s.post(f"{proxied.url}/v1/chat/completions", json=big) as third:  # room again
            assert third.status == 200
    assert proxied.tap.stats().events[("proxy", "bodies_over_budget")] == 1


async def test_a_client_that_expects_100_continue_is_told_to_send_its_body(proxied: Proxied) -> None:
    async with asyncio.timeout(10), aiohttp.ClientSession() as s:  # without the 100 it would wait for ever
        async with s.post(f"{proxied.url}/v1/chat/completions", json=_chat(), expect100=True) as r:
            assert r.status == 200 and "energy" in await r.json()
        async with s.post(f"{proxied.url}/v1/models", data=b"x", headers={"Expect": "a-miracle"}) as r:
            assert r.status == 417
