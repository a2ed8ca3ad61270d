"""The vLLM taps in the sidecar's wiring: built from knobs, plugin drained before spans, self-metrics."""

from __future__ import annotations

import socket
from dataclasses import replace

from sidecar.config import SidecarConfig
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.vllm import VllmTaps
from sidecar.wiring import build_sidecar


def config(**kw: object) -> SidecarConfig:
    base = {"meter": "cpu-model", "host": "127.0.0.1", "port": 0, "otlp_port": 0, "ledger_path": ""}
    return SidecarConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_the_vllm_taps_come_with_the_otlp_receiver_and_the_plugin_is_drained_first() -> None:
    sidecar = build_sidecar(config(otlp_port=4317, plugin_port=9466, vllm_metrics_url="http://x/metrics",
                                   otlp_forward_endpoint="127.0.0.1:1"))  # fmt: skip
    try:
        kinds = [type(s) for s in sidecar.sources]
        assert kinds.index(VllmTaps) < kinds.index(OtlpReceiver)
        taps = next(s for s in sidecar.sources if isinstance(s, VllmTaps))
        assert taps.plugin is not None and taps.scraper is not None and taps.forwarder is not None
        assert sidecar.on_final == taps.on_final
        report = taps.tap_stats()
        assert report.events[("otlp", "received")] == 0 and report.events[("vllm_spans", "requests")] == 0
    finally:
        sidecar.close()


def test_plugin_scraper_and_forwarder_are_off_unless_configured() -> None:
    sidecar = build_sidecar(config(otlp_port=4317, plugin_port=0))
    try:
        taps = next(s for s in sidecar.sources if isinstance(s, VllmTaps))
        assert (taps.plugin, taps.scraper, taps.forwarder) == (None, None, None)
        assert sidecar.snapshot().stats.taps.events[("vllm_spans", "work_from_spans")] == 0
    finally:
        sidecar.close()


def test_the_plugin_and_metrics_taps_work_without_an_otlp_receiver() -> None:
    sidecar = build_sidecar(config(otlp_port=0, plugin_port=9466, vllm_metrics_url="http://x/metrics"))
    try:
        assert not any(isinstance(s, OtlpReceiver) for s in sidecar.sources)
        taps = next(s for s in sidecar.sources if isinstance(s, VllmTaps))
        assert taps.plugin is not None and taps.scraper is not None
    finally:
        sidecar.close()


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_listener_binds_localhost_unless_its_own_knob_says_otherwise() -> None:
    defaults = SidecarConfig()
    assert (defaults.host, defaults.otlp_host, defaults.plugin_host) == ("127.0.0.1",) * 3
    otlp_port, plugin_port = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    sidecar = build_sidecar(replace(defaults, meter="cpu-model", port=0, ledger_path="", otlp_port=otlp_port,
                                    plugin_port=plugin_port))  # fmt: skip
    try:
        for service in sidecar.services:
            service.start()
        taps = next(s for s in sidecar.sources if isinstance(s, VllmTaps))
        assert taps.plugin is not None and taps.plugin._sock is not None
        assert taps.plugin._sock.getsockname() == ("127.0.0.1", plugin_port)
        receiver = next(s for s in sidecar.sources if isinstance(s, OtlpReceiver))
        assert (receiver.host, receiver.port) == ("127.0.0.1", otlp_port)
    finally:
        for service in sidecar.services:
            service.stop()
        sidecar.close()


def test_the_http_host_no_longer_moves_the_otlp_and_plugin_listeners() -> None:
    moved = build_sidecar(config(host="192.0.2.1", otlp_port=4317, plugin_port=9466))  # built, not started
    own = build_sidecar(config(otlp_host="127.0.0.2", otlp_port=4317, plugin_host="127.0.0.3",
                               plugin_port=9466, otlp_max_message_bytes=1024))  # fmt: skip
    try:
        for sidecar, otlp_host, plugin_host in (
            (moved, "127.0.0.1", "127.0.0.1"),
            (own, "127.0.0.2", "127.0.0.3"),
        ):
            receiver = next(s for s in sidecar.sources if isinstance(s, OtlpReceiver))
            taps = next(s for s in sidecar.sources if isinstance(s, VllmTaps))
            assert receiver.host == otlp_host and taps.plugin is not None and taps.plugin.host == plugin_host
        assert next(s for s in own.sources if isinstance(s, OtlpReceiver)).max_message_bytes == 1024
    finally:
        moved.close()
        own.close()
