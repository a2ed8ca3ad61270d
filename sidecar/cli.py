"""The ``jouletrace`` command: one entry point, one subcommand per job.

jouletrace sidecar [--meter nvml ...]   run the sidecar (every knob: --help)
jouletrace demo                         the CPU demo: sidecar + simulated GPU + short workload
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from sidecar.config import SidecarConfig, add_arguments, load_config
from sidecar.errors import JouletraceError

__all__ = ["main"]

log = logging.getLogger("jouletrace")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jouletrace", description="Where do our joules go?")
    sub = parser.add_subparsers(dest="command", required=True)
    side = sub.add_parser("sidecar", help="run the sidecar next to an inference server")
    add_arguments(side)
    demo = sub.add_parser("demo", help="CPU demo: the sidecar on a simulated GPU with a short workload")
    demo.add_argument("--requests", type=int, default=48, help="simulated requests (default 48)")
    demo.add_argument("--seed", type=int, default=1, help="random seed of the workload")
    demo.add_argument("--port", type=int, default=9464, help="port of /metrics while the demo runs (0: any)")
    demo.add_argument("--speed", type=float, default=1.0, help="play the simulation this many times faster")
    demo.add_argument("--rows", type=int, default=12, help="requests to list in the table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jouletrace`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "sidecar":
            knobs = {k: v for k, v in vars(args).items() if k != "command"}
            config = load_config(knobs)
            _setup_logging(config.log_level)
            code: int = asyncio.run(_run_sidecar(config))
            return code
        if args.command == "demo":
            _setup_logging("warning")
            from sidecar.demo import run_demo

            return run_demo(
                n_requests=args.requests, seed=args.seed, port=args.port, speed=args.speed, rows=args.rows
            )
    except JouletraceError as err:
        print(f"jouletrace: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def _run_sidecar(config: SidecarConfig) -> int:
    from sidecar.wiring import build_sidecar

    sidecar = build_sidecar(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "jouletrace sidecar: meter=%s (%s) devices=%s split=%s port=%d",
        config.meter,
        sidecar.meter.source.value,
        ",".join(d.id for d in sidecar.meter.devices),
        config.split,
        config.port,
    )
    try:
        await sidecar.run(stop)
    finally:
        sidecar.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
