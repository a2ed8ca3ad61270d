"""The vLLM taps as one unit: span handler, plugin receiver, /metrics scraper, span forwarder.

:func:`attach_vllm` builds what the config asks for and registers it with the
sidecar's wiring (one line at the span-handler marker). :class:`VllmTaps` is
one work source (it drains the plugin first, so the plugin's claims are known
before spans of the same tick are handled; the OTLP receiver is drained after
it) and one service, and reports the taps' counters for the self-metrics.

Knobs: ``plugin_port`` (UDP, 0 off), ``vllm_metrics_url`` ('' off),
``vllm_metrics_interval_s``, ``otlp_forward_endpoint`` ('' off), ``model``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.attribution.records import RequestEnergy, TapReport
from sidecar.config import SidecarConfig
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import SpanHandler
from sidecar.taps.vllm_forward import SpanForwarder
from sidecar.taps.vllm_metrics import MetricsScraper
from sidecar.taps.vllm_plugin import PluginReceiver
from sidecar.taps.vllm_spans import VllmSpanHandler

if TYPE_CHECKING:
    from sidecar.app import Service, WorkSource

__all__ = ["VllmTaps", "attach_vllm"]


def _otlp_counts(sources: Sequence[object]) -> dict[str, int]:
    for source in sources:
        if isinstance(source, OtlpReceiver):
            return {"received": source.received, "ignored": source.ignored, "dropped": source.dropped}
    return {}


class VllmTaps:
    """The vLLM taps the config enabled; a work source and a service."""

    def __init__(
        self,
        spans: VllmSpanHandler,
        plugin: PluginReceiver | None = None,
        scraper: MetricsScraper | None = None,
        forwarder: SpanForwarder | None = None,
    ) -> None:
        self.spans, self.plugin, self.scraper, self.forwarder = spans, plugin, scraper, forwarder
        self.otlp_counts: Callable[[], dict[str, int]] = dict

    def start(self) -> int:
        for part in (self.plugin, self.scraper, self.forwarder):
            if part is not None:
                part.start()
        return self.plugin.port if self.plugin is not None else 0

    def stop(self, grace_s: float = 1.0) -> None:
        for part in (self.plugin, self.scraper, self.forwarder):
            if part is not None:
                part.stop(grace_s)

    def due(self, now_s: float) -> tuple[list[WorkEvent], list[RequestInfo]]:
        events: list[WorkEvent] = []
        infos: list[RequestInfo] = []
        for part in (self.plugin, self.scraper):
            if part is not None:
                e, i = part.due(now_s)
                events += e
                infos += i
        return events, infos

    def on_final(self, records: list[RequestEnergy]) -> None:
        if self.forwarder is not None:
            self.forwarder.on_final(records)

    def tap_stats(self) -> TapReport:
        """Counters per tap and outcome, the plugin-vs-/metrics token mismatch, vLLM's load."""
        events: dict[tuple[str, str], int] = {}
        for key, value in self.otlp_counts().items():
            events[("otlp", key)] = value
        events[("vllm_spans", "requests")] = self.spans.requests
        events[("vllm_spans", "work_from_spans")] = self.spans.work_from_spans
        events[("vllm_spans", "tasks_joined")] = self.spans.tasks_joined
        server: dict[str, float] = {}
        mismatch: dict[str, float] = {}
        if self.plugin is not None:
            events.update({("vllm_plugin", k): v for k, v in self.plugin.counts.items()})
            if self.plugin.sched is not None:
                server = dict(zip(("running", "waiting", "kv_cache_usage"), self.plugin.sched, strict=True))
        if self.scraper is not None:
            events.update({("vllm_metrics", k): v for k, v in self.scraper.counts.items()})
            mismatch = dict(self.scraper.mismatch)
            latest = self.scraper.latest
            server = {k: latest[k] for k in ("running", "waiting", "kv_cache_usage") if k in latest} or server
        if self.forwarder is not None:
            events.update({("span_forward", k): v for k, v in self.forwarder.counts.items()})
        return TapReport(events=events, token_mismatch=mismatch, server=server)


def attach_vllm(
    config: SidecarConfig,
    to_mono: Callable[[float], float],
    handlers: list[SpanHandler],
    sources: list[WorkSource],
    services: list[Service],
) -> VllmTaps:
    """Build the vLLM taps from ``config``, add the span handler, the source and the service."""
    plugin = (
        PluginReceiver(to_mono, host=config.plugin_host, port=config.plugin_port, default_model=config.model)
        if config.plugin_port
        else None
    )
    forwarder = SpanForwarder(config.otlp_forward_endpoint) if config.otlp_forward_endpoint else None
    scraper = (
        MetricsScraper(
            config.vllm_metrics_url,
            interval_s=config.vllm_metrics_interval_s,
            plugin_tokens=plugin.tokens_until if plugin is not None else None,
        )
        if config.vllm_metrics_url
        else None
    )

    def model() -> str:
        return plugin.model if plugin is not None and plugin.model != "unknown" else config.model

    spans = VllmSpanHandler(
        to_mono,
        model=model,
        claims=plugin.claims if plugin is not None else (lambda request_id: False),
        on_span=forwarder.on_span if forwarder is not None else None,
    )
    taps = VllmTaps(spans, plugin, scraper, forwarder)
    taps.otlp_counts = lambda: _otlp_counts(sources)  # the receiver is added to sources after us
    handlers.append(spans)
    sources.append(taps)
    services.append(taps)
    return taps
