"""The proxy process's side of the wire: what each completion did, to the sidecar, every 100 ms.

The forwarder registers each completion's :class:`~sidecar.proxy.learn.RequestTrace`
with :meth:`WireSender.begin` and fills it in as chunks pass (an append per chunk,
nothing else on the hot path). Every :data:`FLUSH_S` :meth:`WireSender.flush` turns
what the traces gained since the last flush into rows (format:
:mod:`sidecar.contracts.proxy_wire`): a ``begin`` row at first sight, the new chunk
times, the usage once known, the end; and sends them as UDP datagrams to the
sidecar's ``proxy_wire_port``. With no rows it still sends the proxy's counters
every :data:`~sidecar.contracts.proxy_wire.HEARTBEAT_S`. It runs on the proxy's
event loop between chunks; a flush of 200 live streams is a few hundred rows.

UDP never blocks the proxy and never fails a request: a datagram the kernel will
not take is counted (``wire_send_errors``) and its rows are lost (the sidecar
counts the gap in sequence numbers). A sidecar that is not listening loses the
rows the same way; the responses still pass through.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Callable

from sidecar.contracts.proxy_wire import (
    ALIVE_MAX_S,
    HEARTBEAT_S,
    MAX_CHUNKS_PER_REQUEST,
    MAX_CHUNKS_PER_ROW,
    PROXY_COUNTS,
    SECTIONS,
    Alive,
    Begin,
    Chunks,
    End,
    Message,
    Usage,
    encode,
)
from sidecar.proxy.learn import Counts, GivenIds, RequestTrace

__all__ = ["FLUSH_S", "WireSender"]

FLUSH_S = 0.1  # between flushes: well inside the sidecar's settle_s, so work lands before its tick seals
_SNDBUF_BYTES = 4 * 1024 * 1024

log = logging.getLogger(__name__)


class _Sent:
    """How much of one trace has been sent."""

    __slots__ = ("begun", "chunks", "over", "said_s", "trace", "usage")

    def __init__(self, trace: RequestTrace) -> None:
        self.trace = trace
        self.said_s = -math.inf  # when its last row was sent (proxy mono s)
        self.begun = False
        self.chunks = 0
        self.usage: tuple[int, int] | None = None  # the last usage sent (a stream may send it again)
        self.over = False  # the row saying chunks went past the cap is sent


class WireSender:
    """Live traces, and the datagrams that tell the sidecar about them."""

    def __init__(
        self,
        address: tuple[str, int],
        counts: Counts,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        alive_every_s: float = ALIVE_MAX_S,
    ) -> None:
        self.counts, self.clock, self.wall = counts, clock, wall
        self.alive_every_s = alive_every_s  # a live request with no other row is said alive this often
        self.pid = os.getpid()
        self.seq = 0
        self._live: dict[str, _Sent] = {}
        self._ids = GivenIds(counts)  # ids given: a client reusing one gets a new one
        found = socket.getaddrinfo(*address, type=socket.SOCK_DGRAM)
        # IPv4 first: "localhost" may list ::1 first, and the sidecar's receiver binds 127.0.0.1
        family, _, _, _, where = sorted(found, key=lambda a: a[0] != socket.AF_INET)[0]
        self._address: tuple[str, int] = (str(where[0]), int(where[1]))
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF_BYTES)
        self._sock.setblocking(False)
        self._last_sent_s = float("-inf")

    def begin(self, trace: RequestTrace) -> str:
        """Register ``trace`` (the forwarder's ``begin``); an id live, or taken by one of the last
        :data:`~sidecar.proxy.learn.IDS_KEPT` requests, gets a new one (counted)."""
        self._live[self._ids.give(trace, self._live)] = _Sent(trace)
        return trace.request_id

    @property
    def live(self) -> int:
        return len(self._live)

    def message(self) -> Message:
        """The rows the traces gained since the last call (finished traces are forgotten)."""
        now = self.clock()
        begin: list[Begin] = []
        chunks: list[Chunks] = []
        usage: list[Usage] = []
        end: list[End] = []
        alive: list[Alive] = []
        finished: list[str] = []
        for rid, sent in self._live.items():
            t = sent.trace
            done = t.done  # read first: what it says is all in
            rows = len(begin) + len(chunks) + len(usage)
            if not sent.begun:
                sent.begun = True
                ago = round(now - t.arrival_s, 6)
                begin.append(
                    Begin(
                        rid, ago, t.path, t.model, t.stream, t.task, t.tenant, t.traceparent, t.prompt_chars
                    )
                )
            n = len(t.chunk_s)  # a prefix: the forwarder only appends
            for a in range(sent.chunks, n, MAX_CHUNKS_PER_ROW):
                times = t.chunk_s[a : min(n, a + MAX_CHUNKS_PER_ROW)]
                chunks.append(Chunks(rid, a, [int((now - x) * 1e6) for x in times]))
            sent.chunks = max(sent.chunks, n)
            if t.chunks_over and not sent.over:  # one row past the cap: the sidecar marks its work lost
                sent.over = True
                last = MAX_CHUNKS_PER_REQUEST + t.chunks_over - 1
                chunks.append(Chunks(rid, last, [int((now - t.over_s) * 1e6)]))
            if t.usage is not None and t.usage != sent.usage:  # a later usage event says more
                sent.usage = t.usage
                usage.append(Usage(rid, *t.usage))
            if done:
                end_s = t.end_s if t.end_s is not None else now
                end.append(End(rid, round(now - end_s, 6), t.outcome, t.status, t.response_model))
                finished.append(rid)
            elif rows == len(begin) + len(chunks) + len(usage):  # nothing new about it
                if now - sent.said_s < self.alive_every_s:
                    continue
                alive.append(Alive(rid))  # the sidecar must not take it for gone
            sent.said_s = now
        for rid in finished:
            del self._live[rid]
        counts = {k: n for k, n in self.counts.counts().items() if k in PROXY_COUNTS}
        return Message(self.pid, self.seq, self.wall(), begin, chunks, usage, end, counts, alive)

    def flush(self) -> int:
        """Send what the traces gained (or a heartbeat); the datagrams sent."""
        message = self.message()
        now = self.clock()
        rows = sum(len(getattr(message, k)) for k in SECTIONS)
        if not rows and now - self._last_sent_s < HEARTBEAT_S:
            return 0
        datagrams = encode(message)
        if not datagrams and rows:
            self.counts.add("wire_dropped_rows")
        self.seq += len(datagrams)
        self._last_sent_s = now
        sent = 0
        for data in datagrams:
            try:
                self._sock.sendto(data, self._address)
                sent += 1
            except OSError:  # the kernel's buffer full, no route: the rows are lost, the sidecar sees the gap
                self.counts.add("wire_send_errors")
        return sent

    async def run(self, stop: asyncio.Event, interval_s: float = FLUSH_S) -> None:
        """Flush every ``interval_s`` until ``stop``; a last flush after it."""
        while not stop.is_set():
            try:
                self.flush()
            except Exception:  # a bug here must not stop the proxy: its streams still pass
                log.exception("proxy wire flush failed")
            await asyncio.sleep(interval_s)
        self.flush()

    def close(self) -> None:
        self._sock.close()
