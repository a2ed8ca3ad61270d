"""The UDP socket the datagram receivers (vLLM plugin, scheduler hook, proxy wire) listen on, its
non-blocking drain, and the isolation of one datagram's handling."""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import Callable

from sidecar.taps import validate as v
from sidecar.taps.spans import TapOutput

__all__ = ["UdpEndpoint", "bind_udp", "drain", "feed_all", "handle_isolated", "receive"]

log = logging.getLogger(__name__)

_RCVBUF_BYTES = 8 * 1024 * 1024  # bursts between two ticks wait in the kernel, not in Python
_MAX_DATAGRAM_BYTES = 65536


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
) -> TapOutput:
    """Feed every waiting datagram (at most ``max_datagrams``) to ``feed``; socket errors counted."""
    return feed_all(receive(sock, max_datagrams, counts), feed, counts)


def receive(sock: socket.socket | None, max_datagrams: int, counts: Counter[str]) -> list[bytes]:
    """Every waiting datagram (at most ``max_datagrams``), not yet handled; socket errors counted."""
    got: list[bytes] = []
    for _ in range(max_datagrams if sock is not None else 0):
        try:
            got.append(sock.recv(_MAX_DATAGRAM_BYTES))  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            counts["errors"] += 1
            break
    return got


def feed_all(
    datagrams: list[bytes], feed: Callable[[bytes, TapOutput], None], counts: Counter[str]
) -> TapOutput:
    """Each datagram to ``feed``, in order, into one output. A datagram whose handling raises (a bug:
    ``feed`` counts what it refuses) is counted (``internal_errors``) and logged; the datagrams after
    it are still fed, and what the ones before it gave is kept."""
    out = TapOutput()
    for data in datagrams:
        try:
            feed(data, out)
        except Exception:  # as handle_isolated: never the tick's, nor the next datagram's
            counts["internal_errors"] += 1
            log.exception("a datagram of %d bytes could not be handled", len(data))
    return out


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
