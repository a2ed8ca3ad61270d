"""Build a :class:`~sidecar.app.Sidecar` from its config: meter, taps (in drain order), ledger."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from sidecar import container_memory
from sidecar.app import Sidecar
from sidecar.attribution.engine import Attributor
from sidecar.config import SidecarConfig
from sidecar.export.store import Ledger
from sidecar.meters import make_meter
from sidecar.meters.base import EnergyMeter
from sidecar.taps.spans import SpanHandler, WallToMono
from sidecar.taps.tap import SourceTap, Tap
from sidecar.taps.vllm import attach_vllm
from sidecar.taps.vllm_span_format import normalize_request_id

__all__ = ["build_sidecar"]

log = logging.getLogger(__name__)


def build_sidecar(config: SidecarConfig, clock: Callable[[], float] = time.monotonic) -> Sidecar:
    """The sidecar the config asks for; ``--meter sim`` brings its own simulated workload."""
    if config.meter == "sim" and config.model == "unknown":
        from sidecar.sim.run import MODEL_NAME

        config = replace(config, model=MODEL_NAME)
    meter, sim_taps = _meter(config, clock)
    to_mono = WallToMono(mono=clock)
    vllm = attach_vllm(config, to_mono)  # plugin and /metrics taps work without OTLP
    # Drain order: the vLLM plugin before the spans, so its claims are known before the
    # spans of the same tick are handled (else a request's work would be counted twice).
    taps: list[Tap] = [*sim_taps, vllm]
    if config.otlp_port:
        taps.append(_otlp_receiver(config, to_mono, vllm.spans, lambda: sidecar.attributor))
    if config.proxy_wire_port:  # the OpenAI proxy in its own process (jouletrace proxy) sends here
        from sidecar.taps.proxy_wire import ProxyWireReceiver

        taps.append(
            ProxyWireReceiver(
                to_mono,
                host=config.proxy_wire_host,
                port=config.proxy_wire_port,
                model=config.model,
                hold_s=config.settle_s / 2,
                max_requests=config.max_requests,
                expire_s=config.request_timeout_s,
                claimed_by=vllm.claims,
                is_final=lambda rid: sidecar.attributor.is_final(rid),
            )
        )
    if config.proxy_upstream:  # the OpenAI proxy tap in this process: independent of the others, drained last
        from sidecar.proxy.wire import proxy_tap

        taps.append(proxy_tap(config, lambda: sidecar, clock, claimed_by=vllm.claims))
    ledger = (
        Ledger(
            config.ledger_path,
            max_rows=config.ledger_max_rows,
            max_age_s=config.ledger_max_age_s,
            write_every_s=config.ledger_write_every_s,
            exclusive=True,  # one sidecar per ledger file
        )
        if config.ledger_path
        else None
    )
    sidecar = Sidecar(
        config, meter, taps=taps, clock=clock, ledger=ledger, on_final=vllm.on_final, on_tasks=vllm.on_tasks
    )
    sidecar.record_id = normalize_request_id  # GET /v1/requests/chatcmpl-<id> finds <id>
    return sidecar


def _meter(config: SidecarConfig, clock: Callable[[], float]) -> tuple[EnergyMeter, list[Tap]]:
    """The meter; for ``--meter sim`` also the simulated workload's tap (drained first)."""
    sim_taps: list[Tap] = []  # filled by the meter factory only for --meter sim

    def sim_meter(meter_clock: Callable[[], float]) -> EnergyMeter:
        from sidecar.sim.loop import LoopingSim
        from sidecar.sim.run import SimConfig

        base = SimConfig()
        sim = LoopingSim(
            replace(base, workload=replace(base.workload, n_requests=config.sim_requests, start_s=1.0)),
            config.sim_seed,
            clock=meter_clock,
        )
        sim_taps.append(SourceTap(sim))
        return sim

    meter = make_meter(
        config.meter,
        devices=config.device_list(),
        replay_path=config.replay_path or None,
        replay_speed=config.replay_speed,
        cpu_idle_w=config.cpu_idle_w,
        cpu_max_w=config.cpu_max_w,
        clock=clock,
        extra={"sim": sim_meter},
    )
    return meter, sim_taps


def _otlp_receiver(
    config: SidecarConfig, to_mono: WallToMono, vllm_spans: SpanHandler, attributor: Callable[[], Attributor]
) -> Tap:
    """The OTLP receiver (diffusion spans, then vLLM's) with its backpressure. Imported only here:
    gRPC and the OTLP protos cost ~9 MB RSS."""
    from sidecar.taps.diffusion import DiffusionSpanHandler
    from sidecar.taps.otlp import OtlpReceiver
    from sidecar.taps.otlp_limit import REQUESTS_SHARE, ExportLimiter

    return OtlpReceiver(
        [
            DiffusionSpanHandler(
                to_mono,
                max_batch_s=config.diffusion_max_batch_s,
                is_final=lambda rid: attributor().is_final(rid),
            ),
            vllm_spans,
        ],
        host=config.otlp_host,
        port=config.otlp_port,
        max_message_bytes=config.otlp_max_message_bytes,
        max_queued_spans=config.otlp_max_queued_spans,
        max_drain_spans=config.otlp_drain_max_spans,
        max_remembered_spans=config.otlp_dedupe_spans,
        limiter=ExportLimiter(
            memory_limit_mb=_otlp_memory_limit_at_start(config),
            memory_limit=lambda: _otlp_memory_limit_mb(config, container_memory.container_limit_mb()),
            backlog_limit_rows=config.otlp_backlog_limit_rows,
            backlog_rows=lambda: attributor().backlog_rows(),
            requests_limit=int(REQUESTS_SHARE * config.max_requests) if config.otlp_backlog_limit_rows else 0,
            requests=lambda: len(attributor().requests),
            retry_delay_s=config.otlp_retry_delay_s,
        ),
    )


def _otlp_memory_limit_mb(config: SidecarConfig, container_mb: float | None) -> float:
    """The OTLP receiver's memory limit from its two knobs and the container's limit (MB; 0: none).
    The limiter asks again with the container's limit read anew, so a limit resized in place is
    followed; where it cannot be read then, that raises and the limiter keeps the limit it has."""
    return container_memory.otlp_memory_limit_mb(
        config.otlp_memory_limit_mb, config.otlp_memory_limit_percent, container_mb
    )


def _otlp_memory_limit_at_start(config: SidecarConfig) -> float:
    """:func:`_otlp_memory_limit_mb` at start, logged; a container limit that cannot be read is
    taken as none (warned)."""
    try:
        container_mb = container_memory.container_limit_mb()
    except container_memory.UnreadableLimit as err:
        log.warning("container memory limit: %s; otlp_memory_limit_percent does not apply", err)
        container_mb = None
    limit_mb = _otlp_memory_limit_mb(config, container_mb)
    _log_limit(config, limit_mb, container_mb)
    return limit_mb


def _log_limit(config: SidecarConfig, limit_mb: float, container_mb: float | None) -> None:
    """The start-up line; a warning where there is no limit or it is below the resident memory now."""
    from sidecar.taps.otlp_limit import rss_mb

    where = "no container limit" if container_mb is None else f"container limit {container_mb:.0f} MB"
    log.info(
        "OTLP memory limit: %s (otlp_memory_limit_mb %g, otlp_memory_limit_percent %g, %s)",
        f"{limit_mb:.0f} MB" if limit_mb > 0 else "none",
        config.otlp_memory_limit_mb,
        config.otlp_memory_limit_percent,
        where,
    )
    if limit_mb == 0 and config.otlp_memory_limit_percent > 0:
        log.warning(
            "OTLP memory limit: none (no container memory limit found and otlp_memory_limit_mb is 0): "
            "a span flood is bounded only by otlp_backlog_limit_rows and the span queue"
        )
    elif 0 < limit_mb < (used_mb := rss_mb()):
        log.warning(
            "OTLP memory limit %.0f MB is below the sidecar's resident memory at start (%.0f MB): "
            "exports will be refused, retryable, all but one per otlp_retry_delay_s",
            limit_mb,
            used_mb,
        )
