"""sidecar.wiring: the knobs reach the parts they set (the OTLP backpressure, the task wait)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from sidecar import container_memory
from sidecar.attribution.events import RequestInfo, WorkRows
from sidecar.config import SidecarConfig
from sidecar.taps.diffusion import DiffusionSpanHandler
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.vllm import VllmTaps
from sidecar.wiring import build_sidecar


def _config(**knobs: object) -> SidecarConfig:
    base: dict[str, object] = {"meter": "sim", "ledger_path": "", "plugin_port": 0, "hook_port": 0}
    return SidecarConfig(**{**base, **knobs})  # type: ignore[arg-type]


def test_the_otlp_receiver_gets_the_backpressure_knobs_and_reads_the_attributions_backlog() -> None:
    """(The receiver is built, not started: nothing binds the port. The memory limit is one no test
    process reaches, so the refusal asked for is the backlog's: a pytest run can be over 321 MB.)"""
    sidecar = build_sidecar(
        _config(
            otlp_port=14317,
            otlp_memory_limit_mb=1e6,
            otlp_memory_limit_percent=0.0,  # not from a container limit, which a CI runner may have
            otlp_backlog_limit_rows=2,
            otlp_retry_delay_s=0.5,
        )
    )
    (receiver,) = [t for t in sidecar.taps if isinstance(t, OtlpReceiver)]
    limiter = receiver.limiter
    assert (limiter.memory_limit_mb, limiter.backlog_limit_rows, limiter.retry_delay_s) == (1e6, 2, 0.5)
    assert limiter.refusal() is None
    n = 3
    sidecar.attributor.add_work(
        WorkRows(
            request_ids=("a",),
            member=np.zeros(n, dtype=np.int64),
            phase=np.ones(n, dtype=np.int64),
            t0_s=np.arange(n, dtype=float) + 10.0,
            t1_s=np.arange(n, dtype=float) + 10.5,
            units=np.ones(n),
            steps=np.ones(n),
            context_tokens=np.zeros(n),
        )
    )
    assert sidecar.attributor.backlog_rows() == n
    refusal = limiter.refusal()
    assert refusal is not None and refusal.reason == "backlog"


def test_spans_are_refused_before_the_request_cap_would_end_requests_early() -> None:
    """A span is one request and two work rows: the rows' limit alone let a flood reach
    max_requests, where the oldest requests are evicted, before any export was refused."""
    config = _config(
        otlp_port=14317, otlp_memory_limit_percent=0.0, otlp_memory_limit_mb=1e6, max_requests=10
    )
    sidecar = build_sidecar(config)
    (receiver,) = [t for t in sidecar.taps if isinstance(t, OtlpReceiver)]
    assert receiver.limiter.requests_limit == 9
    for k in range(10):
        sidecar.attributor.add_request(RequestInfo(f"r{k}", start_s=1.0))
    refusal = receiver.limiter.refusal()
    assert refusal is not None and refusal.reason == "backlog" and "10 requests in flight" in refusal.message
    off = build_sidecar(_config(otlp_port=14317, otlp_backlog_limit_rows=0))
    (receiver,) = [t for t in off.taps if isinstance(t, OtlpReceiver)]
    assert receiver.limiter.requests_limit == 0  # the backlog check off: both


def test_the_diffusion_handler_asks_attribution_which_ids_are_final() -> None:
    sidecar = build_sidecar(_config(otlp_port=14317))
    (receiver,) = [t for t in sidecar.taps if isinstance(t, OtlpReceiver)]
    (handler,) = [h for h in receiver.handlers if isinstance(h, DiffusionSpanHandler)]
    assert not handler.is_final("x")
    sidecar.attributor._finalized.add("x")
    assert handler.is_final("x")


def test_the_otlp_memory_limit_follows_the_containers_limit_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The default knobs in a 256 MB container: 80 % of it (204.8 MB), not the 400 MB over the OOM
    killer's line; the start-up log names both knobs and the container's limit."""
    monkeypatch.setattr(container_memory, "container_limit_mb", lambda: 256.0)
    with caplog.at_level(logging.INFO, logger="sidecar.wiring"):
        sidecar = build_sidecar(_config(otlp_port=14317))
    (receiver,) = [t for t in sidecar.taps if isinstance(t, OtlpReceiver)]
    assert receiver.limiter.memory_limit_mb == pytest.approx(204.8)
    assert "OTLP memory limit: 205 MB" in caplog.text and "container limit 256 MB" in caplog.text
    monkeypatch.setattr(container_memory, "container_limit_mb", lambda: None)
    sidecar = build_sidecar(_config(otlp_port=14317))
    (receiver,) = [t for t in sidecar.taps if isinstance(t, OtlpReceiver)]
    assert receiver.limiter.memory_limit_mb == 400.0


def test_a_container_limit_below_the_resident_memory_is_warned_of_at_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(container_memory, "container_limit_mb", lambda: 10.0)  # 8 MB: under any Python
    with caplog.at_level(logging.WARNING, logger="sidecar.wiring"):
        build_sidecar(_config(otlp_port=14317))
    assert "OTLP memory limit 8 MB is below the sidecar's resident memory at start" in caplog.text


def test_at_start_an_unreadable_container_limit_is_none_and_no_limit_at_all_is_warned_of(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As the chart runs it (otlp_memory_limit_mb 0): a container limit that cannot be read leaves
    no limit, and the log says both; afterwards the limiter keeps what it has (its own test)."""

    def unreadable() -> float:
        raise container_memory.UnreadableLimit("memory.max: Permission denied")

    monkeypatch.setattr(container_memory, "container_limit_mb", unreadable)
    with caplog.at_level(logging.INFO, logger="sidecar.wiring"):
        sidecar = build_sidecar(_config(otlp_port=14317, otlp_memory_limit_mb=0.0))
    (receiver,) = [t for t in sidecar.taps if isinstance(t, OtlpReceiver)]
    assert receiver.limiter.memory_limit_mb == 0.0
    assert "container memory limit: memory.max: Permission denied" in caplog.text
    assert "OTLP memory limit: none (no container memory limit found" in caplog.text


def test_the_vllm_span_handler_waits_vllm_task_wait_s_for_a_task() -> None:
    sidecar = build_sidecar(_config(vllm_task_wait_s=5.0))
    (vllm,) = [t for t in sidecar.taps if isinstance(t, VllmTaps)]
    assert vllm.spans.tasks.wait_s == 5.0


def test_a_record_is_found_by_the_id_vllm_answered_with_too() -> None:
    """Probe 9: a client without ``X-Request-Id`` holds vLLM's response id (``chatcmpl-<id>``,
    ``cmpl-<id>-0``, a response's first turn ``resp_<id>_0``); the record goes by ``<id>``."""
    from sidecar.attribution.events import RequestInfo

    sidecar = build_sidecar(_config(ledger_path=""))
    for rid in ("abc", "resp_87f0"):
        sidecar.attributor.add_request(RequestInfo(rid, output_tokens=3))
    for asked, found in (("chatcmpl-abc", "abc"), ("cmpl-abc-0", "abc"), ("resp_87f0_0", "resp_87f0")):
        record = sidecar.lookup(asked)
        assert record is not None and record["request_id"] == found
    assert sidecar.lookup("chatcmpl-nothing") is None and sidecar.lookup("abc")["request_id"] == "abc"  # type: ignore[index]
    sidecar.close()
