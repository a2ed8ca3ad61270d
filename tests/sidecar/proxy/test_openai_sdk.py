"""The official openai SDK through the proxy: clients that ignore unknown fields keep working."""

from __future__ import annotations

import pytest

from tests.sidecar.proxy.conftest import Proxied

openai = pytest.importorskip("openai")


async def test_the_openai_sdk_streams_and_completes_through_the_proxy(proxied: Proxied) -> None:
    client = openai.AsyncOpenAI(base_url=f"{proxied.url}/v1", api_key="unused")
    stream = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "w w w "
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert chunks[-1].model_extra["energy"]["final"] is False  # the unknown field is kept, not fatal

    plain = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2, stream=False
    )
    assert plain.usage is not None and plain.usage.completion_tokens == 2
    assert plain.model_extra["energy"]["joules"] > 0

    without_usage = await client.completions.create(model="m", prompt="hi", max_tokens=2, stream=True)
    pieces = [c async for c in without_usage]
    assert len(pieces) == 2 and all(not c.usage for c in pieces)  # the usage chunk it never asked for is gone
    models = await client.models.list()
    assert [m.id for m in models.data] == ["fake-llm"]
    await client.close()
