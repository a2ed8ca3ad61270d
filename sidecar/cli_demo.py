"""``jouletrace demo``: the CPU demo (see sidecar/demo.py)."""

from __future__ import annotations

import argparse
import logging

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=48, help="simulated requests (default 48)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the workload")
    parser.add_argument("--port", type=int, default=9464, help="port of /metrics during the demo (0: any)")
    parser.add_argument("--speed", type=float, default=1.0, help="play the simulation this many times faster")
    parser.add_argument("--rows", type=int, default=12, help="requests to list in the table")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level="WARNING")
    from sidecar.demo import run_demo

    return run_demo(
        n_requests=args.requests, seed=args.seed, port=args.port, speed=args.speed, rows=args.rows
    )
