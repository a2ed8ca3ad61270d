"""The UDP socket the vLLM plugin and scheduler-hook receivers listen on, and its non-blocking drain."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable

from sidecar.taps.spans import TapOutput

__all__ = ["bind_udp", "drain"]

_RCVBUF_BYTES = 8 * 1024 * 1024  # bursts between two ticks wait in the kernel, not in Python
_MAX_DATAGRAM_BYTES = 65536


def bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host:port`` (port 0: any free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF_BYTES)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def drain(
    sock: socket.socket | None,
    feed: Callable[[bytes, TapOutput], None],
    max_datagrams: int,
    counts: Counter[str],
) -> TapOutput:
    """Feed every waiting datagram (at most ``max_datagrams``) to ``feed``; socket errors counted."""
    out = TapOutput()
    for _ in range(max_datagrams if sock is not None else 0):
        try:
            data = sock.recv(_MAX_DATAGRAM_BYTES)  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            counts["errors"] += 1
            break
        feed(data, out)
    return out
