"""The UDP socket the datagram receivers (vLLM plugin, scheduler hook, proxy wire) listen on, its
non-blocking drain, and the isolation of one datagram's handling.

A tick handles a tap's datagrams for at most :data:`DRAIN_BUDGET_S`; the rest wait in the socket's
buffer (8 MiB) for the next tick. The tick runs on the event loop that also answers HTTP, so a
flood of datagrams that are costly to handle (a forged sender's thousands of ``new`` rows a
datagram, ~17 us a row) held /healthz for as long as the flood lasted; now the handling of
datagrams takes at most a budget per tap between two answers (counted ``drain_budget_spent`` each
tick it ran out; the requests they open still cost their attribution in the tick)."""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from collections.abc import Callable

from sidecar.taps import validate as v
from sidecar.taps.spans import TapOutput

__all__ = ["DRAIN_BUDGET_S", "UdpEndpoint", "bind_udp", "drain", "feed_all", "handle_isolated", "receive"]

log = logging.getLogger(__name__)

_RCVBUF_BYTES = 8 * 1024 * 1024  # bursts between two ticks wait in the kernel, not in Python
_MAX_DATAGRAM_BYTES = 65536
DRAIN_BUDGET_S = 0.2  # a tap's datagrams handled in one tick for at most this long (s, wall clock)


def bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host:port`` (port 0: any free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF_BYTES)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


class UdpEndpoint:
    """The socket half of a datagram receiver: :meth:`start` binds ``host:port`` (port 0: a free
    one, then ``port`` says which), :meth:`stop` closes; ``name`` says which receiver in the log."""

    name = "UDP receiver"
    host: str
    port: int
    _sock: socket.socket | None = None

    def start(self) -> int:
        sock = bind_udp(self.host, self.port)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        log.info("%s on udp://%s:%d", self.name, self.host, self.port)
        return self.port

    def stop(self, grace_s: float = 1.0) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def drain(
    sock: socket.socket | None,
    feed: Callable[[bytes, TapOutput], None],
    max_datagrams: int,
    counts: Counter[str],
    budget_s: float = DRAIN_BUDGET_S,
) -> TapOutput:
    """Read and feed waiting datagrams to ``feed``, one at a time, until none waits, ``max_datagrams``
    were read or ``budget_s`` has passed (the rest wait in the socket); socket errors counted."""
    out = TapOutput()
    deadline = time.monotonic() + budget_s
    for _ in range(max_datagrams if sock is not None else 0):
        data = _recv(sock, counts)  # type: ignore[arg-type]
        if data is None:
            return out
        handle_isolated(counts, "UDP", lambda: feed(data, out))  # noqa: B023  # called at once
        if time.monotonic() > deadline:
            counts["drain_budget_spent"] += 1
            break
    out.behind = sock is not None  # the budget or max_datagrams stopped it: more may wait
    return out


def receive(sock: socket.socket | None, max_datagrams: int, counts: Counter[str]) -> list[bytes]:
    """Every waiting datagram (at most ``max_datagrams``), not yet handled; socket errors counted."""
    got: list[bytes] = []
    for _ in range(max_datagrams if sock is not None else 0):
        data = _recv(sock, counts)  # type: ignore[arg-type]
        if data is None:
            break
        got.append(data)
    return got


def _recv(sock: socket.socket, counts: Counter[str]) -> bytes | None:
    """The next waiting datagram, or None (none waits, or a socket error: counted)."""
    try:
        return sock.recv(_MAX_DATAGRAM_BYTES)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        counts["errors"] += 1
        return None


def feed_all(
    datagrams: list[bytes],
    feed: Callable[[bytes, TapOutput], None],
    counts: Counter[str],
    budget_s: float = DRAIN_BUDGET_S,
) -> tuple[TapOutput, list[bytes]]:
    """The datagrams to ``feed``, in order, into one output, until ``budget_s`` has passed; returns the
    output and the datagrams not fed (for the next tick). Each is fed through :func:`handle_isolated`:
    one whose handling raises is counted and logged; the datagrams after it are still fed, and what
    the ones before it gave is kept."""
    out = TapOutput()
    deadline = time.monotonic() + budget_s
    for i, data in enumerate(datagrams):
        handle_isolated(counts, "UDP", lambda: feed(data, out))  # noqa: B023  # called at once
        if time.monotonic() > deadline and i + 1 < len(datagrams):
            counts["drain_budget_spent"] += 1
            out.behind = True
            return out, datagrams[i + 1 :]
    return out, []


def handle_isolated(counts: Counter[str], sender: str, handle: Callable[[], None]) -> None:
    """Run one decoded datagram's ``handle``: a rejected header (nothing in the datagram can be placed)
    is counted by reason, a bug is counted (``internal_errors``) and logged; neither reaches the tick,
    so the next datagram is still handled."""
    try:
        handle()
    except v.Rejected as err:
        v.note(counts, err)
        log.debug("%s datagram rejected: %s", sender, err)
    except Exception:  # a bug must not cost the tick: count, log, go on with the next datagram
        counts["internal_errors"] += 1
        log.exception("%s datagram could not be handled", sender)
