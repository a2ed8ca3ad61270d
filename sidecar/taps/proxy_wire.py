"""Receiver of the proxy process's datagrams (UDP): each proxied completion's timings, as work.

``jouletrace proxy`` in its own process (docs/proxy.md) sends what it learns of
each completion (format: :mod:`sidecar.contracts.proxy_wire`): its arrival, each
content chunk's time, the engine's token counts, its end. This tap rebuilds each
request's :class:`~sidecar.proxy.learn.RequestTrace` from those rows and keeps
them in a :class:`~sidecar.proxy.book.TraceBook`, so the work events and request
infos are made by the same code as the in-process proxy's (:mod:`sidecar.proxy.work`).

Times: ``to_mono(wall) - ago``. Hostile input: every field is checked here, at the edge,
with the shared checks (:mod:`.proxy_rows`, :mod:`.validate`): a header that cannot be
placed (``pid``, ``seq``, a ``wall`` far from the sidecar's clock) rejects its datagram; a
bad row rejects that row only, counted as ``rejected_<reason>``, and the good rows next to
it still count. Sequence numbers per sender pid (:mod:`.sequence`): gaps count ``lost`` and
mark that sender's requests in flight ``work_lost`` (only its own: :mod:`.proxy_wire_owners`),
replays ``rejected_duplicate`` (dropped). A row for a request without its ``begin`` counts
``unknown_request``; a ``begin`` for a live id ``rejected_duplicate``; a ``begin`` for an id
attribution has made final already (``is_final``: a client's ``X-Request-Id`` used again after
the proxy restarted and forgot the ids it gave) goes on under a new id (``renamed_final_id``;
its rows are read under the new one until it ends), so its work is not refused as after final
and charged to its neighbours; chunks that skip
numbers (a lost datagram) ``chunks_missing`` (each number once), chunks listed again
``rejected_duplicate``. Requests not heard of for ``expire_s`` (at least twice
:data:`~sidecar.contracts.proxy_wire.ALIVE_MAX_S`) end (``expired``: the proxy went away;
it sends an ``alive`` row for a request with nothing new, counted ``alive``), timed
by when their datagrams arrived, not the sender's ``wall`` (a forged one far ahead would hold
every later request); beyond ``max_requests`` the oldest request of the sender holding the
most ends (``evicted``: a flood pays for itself). The chunk times held by live requests are at
most ``max_chunks`` (:data:`MAX_CHUNKS`): beyond it the oldest requests of the sender holding
the most end (``evicted``) while that is another sender; one request's are at most
:data:`MAX_CHUNKS_PER_REQUEST` (so one request kept alive cannot take them all). A row beyond
either is dropped (``rejected_chunks_over_cap``; that request's tail of work is then missing,
as for a lost datagram). A bug while handling a datagram counts ``internal_errors``.

Counters: this tap's own as ``jouletrace_tap="proxy_wire"``; the proxy's own (requests
by outcome, rejected fields) as ``jouletrace_tap="proxy"``, where the in-process proxy
reports them: each sender's moves added up (:mod:`.proxy_counts`), so they never go back.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.attribution.records import TapReport
from sidecar.contracts.proxy_wire import (
    DEFAULT_PORT,
    MAX_CHUNKS_PER_REQUEST,
    Alive,
    Begin,
    Chunks,
    End,
    Usage,
    alive_every_s,
)
from sidecar.proxy.book import TraceBook
from sidecar.proxy.learn import Counts, RequestTrace, new_request_id
from sidecar.taps import validate as v
from sidecar.taps.json_read import NOT_JSON, loads_like_json
from sidecar.taps.proxy_counts import ProxyCounts
from sidecar.taps.proxy_rows import (
    parse_alive,
    parse_begin,
    parse_chunks,
    parse_end,
    parse_head,
    parse_usage,
)
from sidecar.taps.proxy_wire_ends import LiveEnds
from sidecar.taps.proxy_wire_owners import Owners
from sidecar.taps.sequence import SeqTracker
from sidecar.taps.spans import TapOutput
from sidecar.taps.udp import UdpEndpoint, drain, handle_isolated

__all__ = ["ProxyWireReceiver"]

log = logging.getLogger(__name__)
_MAX_SENDERS = 64  # proxy pids remembered (sequence numbers, counters' last values)
# chunk times held by the live requests (~32 B each: 32 MB): 1,000 streams at once of 1,000 tokens each
MAX_CHUNKS = 1_000_000


class ProxyWireReceiver(UdpEndpoint, LiveEnds):
    """A UDP endpoint for the proxy process; a :class:`~sidecar.taps.tap.Tap`."""

    name = "proxy wire receiver"

    knob = "proxy_wire_port"

    def __init__(
        self,
        to_mono: Callable[[float], float],
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        model: str = "unknown",
        hold_s: float = 1.0,
        max_requests: int = 100_000,
        expire_s: float = 600.0,
        max_per_drain: int = 50_000,
        max_chunks: int = MAX_CHUNKS,
        wall: Callable[[], float] = time.time,
        claimed_by: Callable[[str], bool] | None = None,  # the engine's tap has the request's work
        is_final: Callable[[str], bool] | None = None,  # attribution has the id's final record
    ) -> None:
        self.to_mono, self.host, self.port = to_mono, host, port
        self.max_chunks, self._chunks_held = max_chunks, 0  # chunk times of requests not yet ended
        self.max_requests, self.expire_s, self.max_per_drain = max_requests, expire_s, max_per_drain
        self.counts: Counter[str] = Counter()
        self._wall = wall
        self._book = TraceBook(
            Counts(), hold_s=hold_s, model=model, claimed_by=claimed_by, alive_every_s=alive_every_s(expire_s)
        )
        # live id -> (when its last datagram arrived, the time that datagram gave), mono s; in arrival order
        self._heard: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._chunks_next: dict[str, int] = {}  # live id -> the number after its last chunk taken
        self.is_final = is_final
        self._renamed: dict[str, str] = {}  # the proxy's id of a live request renamed -> its new id
        self._proxy_id: dict[str, str] = {}  # and back
        self._arrived_s, self._pid = 0.0, 0  # the datagram being handled: arrived (sidecar mono s), sender
        self._owners = Owners()  # the sender of each live request (what one does costs its own)
        self._seqs: OrderedDict[int, SeqTracker] = OrderedDict()
        self._proxy = ProxyCounts(self.counts)  # the proxy's own counters, added up

    # ---- the Tap protocol (start and stop: UdpEndpoint) ---------------------------------
    def due(self, now_s: float) -> tuple[list[WorkEvent], list[RequestInfo]]:
        """Drain waiting datagrams into the traces; the work and infos the traces made."""
        drain(self._sock, self.feed, self.max_per_drain, self.counts)
        self._expire(now_s)
        return self._book.due(now_s)

    def stats(self) -> TapReport:
        mine = self.counts + Counter(self._book.counts.counts())  # the book's: work left to the engine
        events = {("proxy_wire", what): n for what, n in mine.items()}
        events.update({("proxy", what): n for what, n in self._proxy.total.items()})
        return TapReport(events=events)

    @property
    def live_requests(self) -> int:
        return len(self._book)

    # ---- datagrams ---------------------------------------------------------------------
    def feed(self, data: bytes, out: TapOutput | None = None) -> None:
        """Handle one datagram (the public entry point; ``out`` unused: the traces hold the work)."""
        try:
            raw = loads_like_json(data)  # as json.loads reads it, orjson where the two agree
        except NOT_JSON:  # an int of 4,300+ digits too: it failed the whole tick
            self.counts["malformed"] += 1
            return
        self.counts["received"] += 1
        handle_isolated(self.counts, "proxy", lambda: self._message(raw, hash(data)))

    def _message(self, raw: Any, digest: int = 0) -> None:
        head = parse_head(raw, self._wall())
        tracker = self._tracker(head.pid)
        last_seq = tracker.last
        if not tracker.see(head.seq, digest):
            return
        if tracker.skipped:  # a datagram of its lost: any request of its in flight may have lost rows
            self._mark_lost(head.pid)
        v.note_ahead(self.counts, head.ahead_s)
        self._proxy.take(raw, head.pid, head.seq, (last_seq, tracker.last))
        base_s = self.to_mono(head.wall_s)
        self._arrived_s, self._pid = self.to_mono(self._wall()), head.pid
        for begin in v.checked_rows(self.counts, raw, "begin", parse_begin):
            self._begin(begin, base_s)
        for chunks in v.checked_rows(self.counts, raw, "chunks", parse_chunks):
            self._chunks(chunks, base_s)
        for usage in v.checked_rows(self.counts, raw, "usage", parse_usage):
            self._usage(usage, base_s)
        for alive in v.checked_rows(self.counts, raw, "alive", parse_alive):
            self._alive(alive, base_s)
        for end in v.checked_rows(self.counts, raw, "end", parse_end):
            self._end(end, base_s)

    def _tracker(self, pid: int) -> SeqTracker:
        tracker = self._seqs.get(pid)
        if tracker is None:
            tracker = self._seqs[pid] = SeqTracker(self.counts)
            while len(self._seqs) > _MAX_SENDERS:  # first a pid with no live request (least lately)
                others = (p for p in self._seqs if p != pid)
                old = next((p for p in others if not self._owners.holds(p)), next(iter(self._seqs)))
                del self._seqs[old]
                self._proxy.forget(old)
                self._owners.forget(old)
            self._owners.remember(pid)  # heard again (if it was forgotten): its requests its own again
        self._seqs.move_to_end(pid)
        return tracker

    def _mark_lost(self, pid: int) -> None:
        for request_id in self._owners.ids(pid):
            trace = self._book.get(request_id)
            if trace is not None:
                trace.work_lost = True

    # ---- rows -> traces ----------------------------------------------------------------
    def _trace(self, request_id: str, base_s: float) -> RequestTrace | None:
        request_id = self._renamed.get(request_id, request_id)
        trace = self._book.get(request_id)
        if trace is None or trace.done:
            self.counts["unknown_request"] += 1
            return None
        self._heard[request_id] = (self._arrived_s, base_s)
        self._heard.move_to_end(request_id)
        return trace

    def _begin(self, row: Begin, base_s: float) -> None:
        trace = RequestTrace(
            request_id=row.request_id,
            arrival_s=base_s - row.arrival_ago_s,
            path=row.path,
            model=row.model,
            stream=row.stream,
            task=row.task,
            tenant=row.tenant,
            traceparent=row.traceparent,
            prompt_chars=row.prompt_chars,
        )
        if row.request_id in self._renamed:  # live under its new id
            self.counts["rejected_duplicate"] += 1
            return
        final = self.is_final is not None and self.is_final(row.request_id)
        if final and self._book.get(row.request_id) is None:
            trace.request_id = new_request_id()
        if not self._book.add(trace):
            self.counts["rejected_duplicate"] += 1
            return
        if trace.request_id != row.request_id:
            self.counts["renamed_final_id"] += 1
            self._renamed[row.request_id] = trace.request_id
            self._proxy_id[trace.request_id] = row.request_id
        self.counts["requests"] += 1
        self._heard[trace.request_id] = (self._arrived_s, base_s)
        self._owners.add(trace.request_id, self._pid)
        while len(self._heard) > self.max_requests:  # the oldest of the sender holding the most ends
            self._finish(self._owners.most_requests() or next(iter(self._heard)), "evicted")

    def _chunks(self, row: Chunks, base_s: float) -> None:
        trace = self._trace(row.request_id, base_s)
        if trace is None:
            return
        rid = trace.request_id
        have = self._chunks_next.get(rid, 0)  # numbers taken or counted missing: 0..have-1
        if row.first < have:
            self.counts["rejected_duplicate"] += 1
            return
        times = [base_s - ago_us * 1e-6 for ago_us in row.ago_us]
        if not times:  # nothing to take (the proxy never sends one): not a sign of a loss either
            return
        refused = None
        if times[0] < (trace.chunk_s[-1] if trace.chunk_s else trace.arrival_s):
            refused = "rejected_end_before_start"
        elif row.first + len(times) > MAX_CHUNKS_PER_REQUEST or not self._room_for(rid, len(times)):
            # (by its first index too: a row claiming chunk 10**7 would count 10**7 missing)
            refused = "rejected_chunks_over_cap"
        if refused is not None or row.first > have:  # work of it lost: its energy is unknown
            trace.work_lost = True
        if refused is not None:
            self.counts[refused] += 1
            return
        if row.first > have:
            self.counts["chunks_missing"] += row.first - have
        self._chunks_next[rid] = row.first + len(times)  # past the gap: counted once
        trace.chunk_s.extend(times)
        trace.changed()
        self._chunks_held += len(times)
        self._owners.took_chunks(rid, len(times))

    def _usage(self, row: Usage, base_s: float) -> None:
        trace = self._trace(row.request_id, base_s)
        if trace is not None:
            trace.usage = (row.prompt_tokens, row.output_tokens)
            trace.changed()

    def _alive(self, row: Alive, base_s: float) -> None:
        """Heard of (so not expired); the book hands its info on again to attribution itself."""
        if self._trace(row.request_id, base_s) is not None:
            self.counts["alive"] += 1

    def _end(self, row: End, base_s: float) -> None:
        trace = self._trace(row.request_id, base_s)
        if trace is None:
            return
        self._forget(trace.request_id)
        end_s = base_s - row.end_ago_s
        if end_s < trace.arrival_s:
            self.counts["rejected_end_before_start"] += 1
            end_s = trace.arrival_s
        trace.outcome, trace.status, trace.response_model = row.outcome, row.status, row.response_model
        trace.end_s = end_s
        trace.done = True  # last: the book reads the fields above once it sees this
        trace.changed()
        self._chunks_held -= len(trace.chunk_s)
        self.counts["ended"] += 1
