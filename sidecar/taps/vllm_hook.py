"""Receiver of the scheduler hook's datagrams (UDP): every engine step's exact members.

The hook (servers/vllm/scheduler_hook.py, or anything that speaks
:mod:`sidecar.contracts.scheduler_wire`) sends each step's members with their
scheduled tokens and the tokens already in their KV cache. :meth:`HookReceiver.feed`
(the public entry point; ``due()`` drains the socket into it) makes

* one :class:`StepBatch` per step over ``[t0, t1]``: per member, ``units`` =
  its scheduled tokens; ``context_tokens`` = query-key pairs under causal
  attention, ``k*p + k*(k+1)/2`` for ``k`` tokens starting at KV position
  ``p``; phase PREFILL if any of its tokens is prefill - a prompt token
  (position < prompt) or a recomputed one (below the furthest position it
  reached, after a preemption: a step back by more than its previous step's
  tokens, which a speculative-decoding rollback never is) - else DECODE;
* a :class:`RequestInfo` at ``fin`` (start = arrival, end = end of its last
  step, prompt and output tokens, model) and at ``gone`` (aborted: output
  tokens from the furthest KV position reached, ``finish_reason`` abort).

Times: ``to_mono(wall) - ago``. The CPU gap after a step, over 2 us (less is
rounding of the wire's times) and up to ``max_gap_s`` (50 ms: the engine
handling the step's output and scheduling the next), is one more array event
for the step's members with no work and no step: they are present, so they
share the floor the GPU draws meanwhile; a longer pause
(waiting for an arrival) is idle. It claims every request it hears of
(:meth:`claims`), so neither the stat-logger plugin nor the span handler adds
the same request's work again (the hook sends a request's first step at once,
before vLLM's front end hears of it).

Hostile input: every field is checked once, here at the edge, with the shared
checks (:mod:`.vllm_hook_rows`, :mod:`.validate`): a header that cannot be
placed (``pid``, ``seq``, a ``wall`` far from the sidecar's clock) rejects its
datagram; a bad ``new``/``steps``/``fin``/``gone`` row rejects that row only,
counted as ``rejected_<reason>``; the good rows next to it still count. A bug
while handling one datagram is counted (``internal_errors``), never raised into
the tick. Sequence numbers (:mod:`.sequence`): gaps count ``lost``, late
datagrams ``reordered``, replays ``rejected_duplicate`` (dropped), a jump beyond
the window ``seq_jumps`` (not a loss, not a restart), each per process.

Processes: each pid is a sender with its own requests, numbers and last step
(:class:`~sidecar.taps.vllm_hook_sender.HookSender`, :mod:`.senders`). A process's
requests in flight end as aborted when it restarted (a new pid heard after it was quiet
for ``QUIET_S``, or the same pid numbering from 0 again after as long: sooner, that datagram
is refused, ``rejected_restart``) or went quiet while others speak; a second engine on the same
port, or a datagram forged with another pid, ends nothing of a process that is sending.

Counters (``counts``): received, malformed (not JSON), restarts, senders_gone,
rejected_too_many_senders (:mod:`.senders`), steps, members, unknown_member (an idx without its
``new`` row, e.g. sent before this sidecar started: that member is adopted,
:meth:`~sidecar.taps.vllm_hook_sender.HookSender.step`), new_renewed (a ``new`` row that
had been lost, taken from a later datagram's ``renew``: its request's earlier steps may
be lost too, and its record says so), after_fin, unknown_end, finished,
aborted, evicted (more than ``max_requests`` in flight over all processes: the oldest
of the process holding the most). Units:
seconds, tokens.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sidecar.attribution.events import Work
from sidecar.attribution.task_labels import Info
from sidecar.contracts.scheduler_wire import DEFAULT_PORT
from sidecar.recent_ids import RecentIds
from sidecar.taps import validate as v
from sidecar.taps.json_read import NOT_JSON, loads_like_json
from sidecar.taps.senders import QUIET_S, Senders
from sidecar.taps.spans import TapOutput
from sidecar.taps.udp import UdpEndpoint, drain, handle_isolated
from sidecar.taps.vllm_hook_rows import parse_fin, parse_gone, parse_head, parse_new, parse_step
from sidecar.taps.vllm_hook_sender import MIN_GAP_S, HookSender, HookShared

__all__ = ["MAX_GAP_S", "MIN_GAP_S", "HookReceiver"]

MAX_GAP_S = 0.05  # a CPU gap after a step up to this long has the step's members present

log = logging.getLogger(__name__)

_MAX_CLAIMS = 100_000


class HookReceiver(UdpEndpoint):
    """A UDP endpoint for the scheduler hook; a work source and a service."""

    name = "vLLM scheduler hook receiver"

    def __init__(
        self,
        to_mono: Callable[[float], float],
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        default_model: str = "unknown",
        max_per_drain: int = 50_000,
        max_requests: int = 100_000,
        max_gap_s: float = MAX_GAP_S,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.to_mono = to_mono
        self.max_gap_s = max_gap_s
        self.host, self.port = host, port
        self.model = default_model
        self.max_per_drain = max_per_drain
        self.max_requests = max_requests
        self.counts: Counter[str] = Counter()
        self._wall = wall  # Unix seconds now, to date-check datagrams
        self._claimed: RecentIds[str] = RecentIds(_MAX_CLAIMS)  # the oldest forgotten first
        # when the first datagram heard was sent (sidecar clock; -inf: none yet): a request in
        # flight before then has no new row here, its steps go under unknown-<pid>-<idx>
        self._began_s = -math.inf
        self._shared = HookShared(self.counts, self._claimed, max_gap_s)
        self.senders: Senders[HookSender] = Senders(
            lambda pid, sent_s: HookSender(self._shared, self.model, sent_s, pid),
            lambda sender, at_s, out: sender.end_all(at_s, out),
            self.counts,
        )

    # ---- source (start and stop: UdpEndpoint) ---------------------------------------
    def due(self, now_s: float) -> tuple[list[Work], list[Info]]:
        """Drain waiting datagrams; return the step batches and request infos they describe (and
        those of the requests of a process gone quiet beside others: :mod:`.senders`)."""
        out = drain(self._sock, self.feed, self.max_per_drain, self.counts)
        self.senders.sweep(now_s, out)
        return out.events, out.infos

    def feed(self, data: bytes, out: TapOutput) -> None:
        """Handle one datagram: step batches and request infos into ``out`` (the public entry point)."""
        try:
            raw = loads_like_json(data)
        except NOT_JSON:  # an int of 4,300+ digits too: it failed the whole tick
            self.counts["malformed"] += 1
            return
        self.counts["received"] += 1
        handle_isolated(self.counts, "hook", lambda: self._message(raw, out, hash(data)))

    def claims(self, request_id: str) -> bool:
        """Whether the hook supplies this request's work (so the plugin and spans must not)."""
        return request_id in self._claimed

    def adopted_before(self) -> float:
        """Requests that started before this time (sidecar clock) and that the hook has not claimed
        may have had their steps since taken under ``unknown-<pid>-<idx>`` (they were in flight when
        it began to hear the engine): the plugin and the spans must not add that work again. The
        send time of the first datagram heard (a ``wall`` ahead of the sidecar's clock is taken as
        read now: a forged one cannot push it later than that)."""
        return self._began_s

    @property
    def live(self) -> int:
        """Requests in flight, over every process heard."""
        return self._shared.live

    # ---- internals -------------------------------------------------------------------------
    def _message(self, raw: Any, out: TapOutput, digest: int = 0) -> None:
        head = parse_head(raw, self._wall())
        base_s = self.to_mono(head.wall_s)
        sender = self._sender(head.pid, head.seq, base_s, self.senders.judged_s(base_s, head.ahead_s), out)
        if sender is None:
            return
        if not sender.seqs.see(head.seq, digest):
            return
        if self._began_s == -math.inf:  # (a datagram dated a day back set it a day early)
            self._began_s = max(base_s, self.to_mono(self._wall()) - QUIET_S)
        if sender.seqs.skipped:  # a datagram lost: any request in flight may have lost a step
            sender.gapped.update(sender.live)
        v.note_ahead(self.counts, head.ahead_s)
        if head.model:
            self.model = sender.model = head.model
        for new in v.checked_rows(self.counts, raw, "new", parse_new):
            sender.new(new, base_s, out)
            self._within_cap()
        for row in v.checked_rows(self.counts, raw, "renew", parse_new):  # a lost new row sent again
            sender.renew(row, base_s, out)
            self._within_cap()
        for step in v.checked_rows(self.counts, raw, "steps", parse_step):
            sender.step(step, base_s, out)
            self._within_cap()
        for fin in v.checked_rows(self.counts, raw, "fin", parse_fin):
            sender.end(fin.idx, fin.output_tokens, fin.reason, base_s, out)
        for idx in v.checked_rows(self.counts, raw, "gone", parse_gone):
            sender.end(idx, None, "abort", base_s, out)

    def _within_cap(self) -> None:
        """Over ``max_requests`` in flight (a ``new`` or ``renew`` row, which went past it, or steps'
        adopted members): the oldest of the process holding the most ends (``evicted``)."""
        while self._shared.live > self.max_requests:
            biggest = self.senders.biggest(lambda s: len(s.live))
            if biggest is None or not biggest.live:
                return
            biggest.evict_oldest()

    def _sender(
        self, pid: int, seq: int, base_s: float, judged_s: float, out: TapOutput
    ) -> HookSender | None:
        """The datagram's process (:mod:`.senders`: sent at ``base_s``, others judged quiet by
        ``judged_s``); the same pid numbering from 0 again (not a replay of its first datagram) after
        it was quiet for ``quiet_s`` (by ``judged_s``) is that process restarted. Sooner,
        the datagram is refused (``rejected_restart``; None): a process that is sending has not
        restarted, and one datagram forged with its pid and number 0 ended all its requests."""
        sender = self.senders.get(pid)
        if sender is not None and seq == 0 and sender.seqs.last not in (None, 0) and not sender.seqs.seen(0):
            if judged_s - sender.heard_s < self.senders.quiet_s:
                self.counts["rejected_restart"] += 1
                return None
            return self.senders.restart(pid, base_s, out)
        return self.senders.heard(pid, base_s, out, judged_s)
