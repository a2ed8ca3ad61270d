"""``jouletrace sidecar``: run the sidecar until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from sidecar.config import SidecarConfig, load_config
from sidecar.config import add_arguments as add_knobs

__all__ = ["add_arguments", "run"]

log = logging.getLogger("jouletrace")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_knobs(parser)


def run(args: argparse.Namespace) -> int:
    knobs = {k: v for k, v in vars(args).items() if k != "command"}
    config = load_config(knobs)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    code: int = asyncio.run(_run(config))
    return code


async def _run(config: SidecarConfig) -> int:
    from sidecar.wiring import build_sidecar

    sidecar = build_sidecar(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "jouletrace sidecar: meter=%s (%s) devices=%s split=%s port=%d otlp_port=%d",
        config.meter,
        sidecar.meter.source.value,
        ",".join(d.id for d in sidecar.meter.devices),
        config.split,
        config.port,
        config.otlp_port,
    )
    try:
        await sidecar.run(stop)
    finally:
        sidecar.close()
    return 0
