"""``jouletrace sidecar``: run the sidecar until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable

from sidecar.config import SidecarConfig, load_config
from sidecar.config import add_arguments as add_knobs
from sidecar.fd_limit import quiet_accept_errors, raise_fd_limit
from sidecar.gc_tune import tune_gc
from sidecar.malloc_tune import tune_malloc

__all__ = ["add_arguments", "run", "start_watchdog"]

log = logging.getLogger("jouletrace")

_EXIT_SLACK_S = 1.0  # beyond shutdown_grace_s for closing the HTTP server and the interpreter's exit


def start_watchdog(after_s: float, exit_now: Callable[[int], None] = os._exit) -> threading.Timer:
    """Exit with status 1 if the stop is still running ``after_s`` seconds after the signal
    (a hung tap or ledger must not hold the pod past its grace period)."""

    def fire() -> None:
        log.error("stop took longer than %.1f s; exiting without finishing it", after_s)
        logging.shutdown()
        exit_now(1)

    timer = threading.Timer(after_s, fire)
    timer.daemon = True
    timer.start()
    return timer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_knobs(parser)


def run(args: argparse.Namespace) -> int:
    knobs = {k: v for k, v in vars(args).items() if k != "command"}
    config = load_config(knobs)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    tune_malloc()  # before the gRPC threads allocate (benchmarks/memory.py: -45 MB at rest after a flood)
    raise_fd_limit()  # connections a client holds must not run the process out of descriptors
    code: int = asyncio.run(_run(config))
    return code


async def _run(config: SidecarConfig) -> int:
    from sidecar.wiring import build_sidecar

    sidecar = build_sidecar(config)
    tune_gc()  # the built sidecar's long-lived objects out of later collections (sidecar/gc_tune.py)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    quiet_accept_errors(loop)  # no descriptor left: a line a minute, not one a try (sidecar/fd_limit.py)

    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        # signal.signal, not loop.add_signal_handler: Python runs this between two bytecodes of the
        # main thread, so the grace period starts at the signal even while a long tick holds the loop
        # (the loop's own handler would wait for the tick to end).
        if not stopping.is_set():
            stopping.set()
            start_watchdog(config.shutdown_grace_s + _EXIT_SLACK_S)
            loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
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
