"""Build a :class:`~sidecar.app.Sidecar` from its config: meter, sources, ledger."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from sidecar.app import Service, Sidecar, WorkSource
from sidecar.config import SidecarConfig
from sidecar.export.store import Ledger
from sidecar.meters import make_meter
from sidecar.meters.base import EnergyMeter
from sidecar.taps.diffusion import DiffusionSpanHandler
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import SpanHandler, WallToMono
from sidecar.taps.vllm import VllmTaps, attach_vllm

__all__ = ["build_sidecar"]


def build_sidecar(config: SidecarConfig, clock: Callable[[], float] = time.monotonic) -> Sidecar:
    """The sidecar the config asks for; ``--meter sim`` brings its own simulated workload."""
    sources: list[WorkSource] = []
    if config.meter == "sim" and config.model == "unknown":
        from sidecar.sim.run import MODEL_NAME

        config = replace(config, model=MODEL_NAME)

    def sim_meter(meter_clock: Callable[[], float]) -> EnergyMeter:
        from sidecar.sim.loop import LoopingSim
        from sidecar.sim.run import SimConfig

        base = SimConfig()
        sim = LoopingSim(
            replace(base, workload=replace(base.workload, n_requests=config.sim_requests, start_s=1.0)),
            config.sim_seed,
            clock=meter_clock,
        )
        sources.append(sim)
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
    services: list[Service] = []
    to_mono = WallToMono(mono=clock)
    # span handlers, one line each (diffusion batch spans; vLLM's llm_request spans via attach_vllm)
    handlers: list[SpanHandler] = [DiffusionSpanHandler(to_mono)]
    # the vLLM plugin and /metrics taps work without OTLP; the plugin is drained before spans
    vllm_taps: VllmTaps = attach_vllm(config, to_mono, handlers, sources, services)
    if config.otlp_port:
        receiver = OtlpReceiver(
            handlers,
            host=config.otlp_host,
            port=config.otlp_port,
            max_message_bytes=config.otlp_max_message_bytes,
        )
        sources.append(receiver)
        services.append(receiver)
    ledger = (
        Ledger(config.ledger_path, max_rows=config.ledger_max_rows, max_age_s=config.ledger_max_age_s)
        if config.ledger_path
        else None
    )
    return Sidecar(
        config,
        meter,
        sources=sources,
        services=services,
        clock=clock,
        ledger=ledger,
        on_final=vllm_taps.on_final,  # enriched spans
    )
