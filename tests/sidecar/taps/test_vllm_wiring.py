"""The vLLM taps in the sidecar's wiring: built from knobs, plugin drained before spans, self-metrics."""

from __future__ import annotations

from sidecar.config import SidecarConfig
from sidecar.contracts.scheduler_wire import Message, NewRow, StepRow, encode
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import TapOutput
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


def test_the_hook_is_drained_first_and_its_claims_reach_the_plugin_and_the_spans() -> None:
    sidecar = build_sidecar(config(otlp_port=4317, plugin_port=9466, hook_port=9467))
    try:
        taps = next(s for s in sidecar.sources if isinstance(s, VllmTaps))
        assert taps.hook is not None and taps.plugin is not None
        assert taps.plugin.claimed_by == taps.hook.claims
        (data,) = encode(
            Message(
                1,
                0,
                1000.0,
                "m",
                [NewRow(0, "chatcmpl-a", 5, 0.1)],
                [StepRow(0.1, 0.0, [0], [5], [0])],
                [],
                [],
            )
        )
        taps.hook.feed(data, TapOutput())
        assert taps.spans.claims("a") and not taps.spans.claims("b")
        assert taps.tap_stats().events[("vllm_hook", "steps")] == 1
    finally:
        sidecar.close()
    off = build_sidecar(config(otlp_port=4317, plugin_port=9466, hook_port=0))
    try:
        taps = next(s for s in off.sources if isinstance(s, VllmTaps))
        assert taps.hook is None and taps.plugin is not None and taps.plugin.claimed_by is None
    finally:
        off.close()
