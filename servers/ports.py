"""Ports for the processes the demos, tests and benchmarks start: each one free and never given twice."""

from __future__ import annotations

import socket

__all__ = ["free_port"]

_ISSUED: set[tuple[int, int]] = set()  # (kind, port) handed out by free_port in this process


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port that is free on 127.0.0.1 right now (TCP by default), never one handed out before in
    this process: a port is free again once returned, so the next bind to port 0 may pick it again
    (CI once gave a stack's sidecar an OTLP port another listener of the same test had taken)."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if (kind, port) not in _ISSUED:
            _ISSUED.add((kind, port))
            return port
