"""The vLLM taps as one unit: span handler, hook and plugin receivers, /metrics scraper, span forwarder.

:func:`attach_vllm` builds what the config asks for and returns it; the wiring
(:mod:`sidecar.wiring`) puts :attr:`VllmTaps.spans` among the OTLP receiver's
span handlers and :class:`VllmTaps` itself in the ordered tap list, before the
receiver (the plugin's claims must be known before spans of the same tick are
handled). :class:`VllmTaps` is one :class:`~sidecar.taps.tap.Tap`: it reads the
plugin's socket, then drains the scheduler hook, then handles what it read from
the plugin, then the scraper, and reports their counters (and the forwarder's).
The hook sends a request's first step before vLLM's front end hears of the
request, so any plugin datagram about it was sent after the hook's claim: read
in this order, the claim is known before the plugin's start, however late in the
tick the hook's datagram arrived (drained one after the other, a hook datagram
arriving between the two drains would come a tick after the plugin's start);
the span handler's counters come with the OTLP receiver's.
A request's work comes from the first of hook, plugin, span that has it; the
others add only what they know about it (infos, timings).

Knobs: ``hook_port`` (UDP, 0 off), ``plugin_port`` (UDP, 0 off), ``vllm_metrics_url`` ('' off),
``vllm_metrics_interval_s``, ``otlp_forward_endpoint`` ('' off), ``model``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from sidecar.attribution.events import Work
from sidecar.attribution.records import RequestEnergy, TapReport
from sidecar.attribution.task_labels import Info
from sidecar.config import SidecarConfig
from sidecar.taps.vllm_hook import HookReceiver
from sidecar.taps.vllm_metrics import MetricsScraper
from sidecar.taps.vllm_plugin import PluginReceiver
from sidecar.taps.vllm_spans import VllmSpanHandler

if TYPE_CHECKING:  # imported when forwarding is on: the OTLP exporter costs ~2 MB RSS
    from sidecar.taps.vllm_forward import SpanForwarder

__all__ = ["VllmTaps", "attach_vllm"]

log = logging.getLogger(__name__)


class VllmTaps:
    """The vLLM taps the config enabled, as one :class:`~sidecar.taps.tap.Tap`."""

    knob = "plugin_port"  # the port knob of the part that is starting (hook_port or plugin_port)

    def __init__(
        self,
        spans: VllmSpanHandler,
        plugin: PluginReceiver | None = None,
        scraper: MetricsScraper | None = None,
        forwarder: SpanForwarder | None = None,
        hook: HookReceiver | None = None,
    ) -> None:
        self.spans, self.plugin, self.scraper, self.forwarder = spans, plugin, scraper, forwarder
        self.hook = hook
        self.claims = claims_of(hook, plugin)  # the hook's or the plugin's: a proxy leaves their work

    def start(self) -> int:
        ports = (("hook_port", self.hook), ("plugin_port", self.plugin))
        for knob, part in (*ports, ("", self.scraper), ("", self.forwarder)):
            if part is not None:
                self.knob = knob  # named if this part cannot start (the hook and the plugin bind ports)
                part.start()
        self.knob = "plugin_port"
        return self.plugin.port if self.plugin is not None else 0

    def stop(self, grace_s: float = 1.0) -> None:
        """Stop the receivers and the scraper; the forwarder sends on until :meth:`close_output`."""
        for part in (self.hook, self.plugin, self.scraper):
            if part is not None:
                part.stop(grace_s)

    def close_output(self, grace_s: float) -> None:
        """Stop the forwarder (after the stop stored its records: :class:`~sidecar.taps.tap.Sends`)."""
        if self.forwarder is not None:
            self.forwarder.stop(grace_s)

    def due(self, now_s: float) -> tuple[list[Work], list[Info]]:
        """The parts' work and infos, each part on its own: one that raises (a bug) is counted in its
        ``internal_errors`` and gives nothing this tick; the others' work is kept (the plugin's
        datagrams are read before the hook is drained: lost with it, were the hook's fault the tick's)."""
        hook, plugin, scraper = self.hook, self.plugin, self.scraper
        plugin_datagrams = plugin.receive() if plugin is not None else []  # before the hook: see above
        parts = (  # handled in this order: claims
            _isolated(hook, lambda h: h.due(now_s)),
            _isolated(plugin, lambda p: p.handle(plugin_datagrams, now_s)),
            _isolated(scraper, lambda m: m.due(now_s)),
        )
        events: list[Work] = []
        infos: list[Info] = []
        for part in parts:
            if part is not None:
                events += part[0]
                infos += part[1]
        return events, infos

    def on_final(self, records: Sequence[RequestEnergy]) -> None:
        if self.forwarder is not None:
            self.forwarder.on_final(records)

    def on_tasks(self, tasks: dict[str, str]) -> None:
        if self.forwarder is not None:
            self.forwarder.on_tasks(tasks)

    def stats(self) -> TapReport:
        """Counters per tap and outcome, the plugin-vs-/metrics token mismatch, vLLM's load."""
        events: dict[tuple[str, str], int] = {}
        server: dict[str, float] = {}
        mismatch: dict[str, float] = {}
        if self.hook is not None:
            events.update({("vllm_hook", k): v for k, v in self.hook.counts.items()})
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


def attach_vllm(config: SidecarConfig, to_mono: Callable[[float], float]) -> VllmTaps:
    """The vLLM taps ``config`` asks for (the span handler always; the others by their knobs)."""
    hook = (
        HookReceiver(to_mono, host=config.hook_host, port=config.hook_port, default_model=config.model)
        if config.hook_port
        else None
    )
    # requests in flight before the hook began: their steps are the hook's (unknown-<pid>-<idx>)
    adopted_before = hook.adopted_before if hook is not None else lambda: -math.inf
    plugin = (
        PluginReceiver(
            to_mono,
            host=config.plugin_host,
            port=config.plugin_port,
            default_model=config.model,
            claimed_by=hook.claims if hook is not None else None,
            adopted_before=adopted_before,
        )
        if config.plugin_port
        else None
    )
    forwarder = None
    if config.otlp_forward_endpoint:
        from sidecar.taps.vllm_forward import SpanForwarder

        forwarder = SpanForwarder(config.otlp_forward_endpoint)
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
        for part in (hook, plugin):
            if part is not None and part.model != "unknown":
                return part.model
        return config.model

    spans = VllmSpanHandler(
        to_mono,
        model=model,
        claims=claims_of(hook, plugin),
        adopted_before=adopted_before,
        on_span=forwarder.on_span if forwarder is not None else None,
        task_wait_s=config.vllm_task_wait_s,
    )
    return VllmTaps(spans, plugin, scraper, forwarder, hook)


def claims_of(hook: HookReceiver | None, plugin: PluginReceiver | None) -> Callable[[str], bool]:
    """Whether the scheduler hook or the plugin supplies a request's work (so spans and a proxy must
    not): asked once per span, so no claimer, or just one, without a generator in between."""
    claimers = [part.claims for part in (hook, plugin) if part is not None]
    if not claimers:
        return lambda request_id: False
    if len(claimers) == 1:
        return claimers[0]
    return lambda request_id: any(claims(request_id) for claims in claimers)


_P = TypeVar("_P", HookReceiver, PluginReceiver, MetricsScraper)


def _isolated(
    part: _P | None, due: Callable[[_P], tuple[Sequence[Work], Sequence[Info]]]
) -> tuple[Sequence[Work], Sequence[Info]] | None:
    """``due(part)``, or None without a part; a part that raises is counted and logged, and gives none."""
    if part is None:
        return None
    try:
        return due(part)
    except Exception:
        part.counts["internal_errors"] += 1
        log.exception("%s failed to hand on its work", type(part).__name__)
        return None
