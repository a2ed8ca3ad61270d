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
the window ``seq_jumps`` (not a loss, not a restart).

Counters (``counts``): received, malformed (not JSON), restarts (a new pid, or
the same pid numbering from 0 again: the old in-flight requests end as
aborted), steps, members, unknown_member (an idx without its ``new`` row, e.g.
lost: that member is skipped), after_fin, unknown_end, finished, aborted,
evicted (more than ``max_requests`` in flight). Units: seconds, tokens.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import numpy as np

from sidecar.attribution.events import Phase, RequestInfo, StepBatch, Work
from sidecar.attribution.task_labels import Info
from sidecar.contracts.scheduler_wire import DEFAULT_PORT, NewRow
from sidecar.recent_ids import RecentIds
from sidecar.taps import validate as v
from sidecar.taps.json_read import loads_like_json
from sidecar.taps.sequence import SeqTracker
from sidecar.taps.spans import TapOutput
from sidecar.taps.udp import UdpEndpoint, drain, handle_isolated
from sidecar.taps.vllm_hook_index import IdxSlots
from sidecar.taps.vllm_hook_rows import (
    StepArrays,
    parse_fin,
    parse_gone,
    parse_head,
    parse_new,
    parse_step,
)
from sidecar.taps.vllm_hook_slots import Req, Slots
from sidecar.taps.vllm_spans import normalize_request_id

__all__ = ["MAX_GAP_S", "MIN_GAP_S", "HookReceiver"]

MAX_GAP_S = 0.05  # a CPU gap after a step up to this long has the step's members present
# the hook sends times rounded to 1 us: back-to-back steps (async scheduling) can come 1-2 us
# apart; such a "gap" is rounding, not CPU time, and would double the rows attribution handles
MIN_GAP_S = 2e-6

log = logging.getLogger(__name__)

_MAX_CLAIMS = 100_000
_RECENT = 4096  # finished requests whose idx still resolves (a late step is still counted)


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
        self._last: StepBatch | None = None  # the previous step, whose members own the CPU gap after it
        self._last_slots = np.zeros(0, dtype=np.int64)  # its members' slots (their ids tuple is reused)
        self.host, self.port = host, port
        self.model = default_model
        self.max_per_drain = max_per_drain
        self.max_requests = max_requests
        self.counts: Counter[str] = Counter()
        self._wall = wall  # Unix seconds now, to date-check datagrams
        self._pid: int | None = None
        self._seqs = SeqTracker(self.counts)
        self._live: OrderedDict[int, Req] = OrderedDict()
        self._recent: OrderedDict[int, Req] = OrderedDict()
        self._slot = IdxSlots()  # idx (live or recent) -> slot
        self._slots = Slots()
        self._claimed: RecentIds[str] = RecentIds(_MAX_CLAIMS)  # the oldest forgotten first

    # ---- source (start and stop: UdpEndpoint) ---------------------------------------
    def due(self, now_s: float) -> tuple[list[Work], list[Info]]:
        """Drain waiting datagrams; return the step batches and request infos they describe."""
        out = drain(self._sock, self.feed, self.max_per_drain, self.counts)
        return out.events, out.infos

    def feed(self, data: bytes, out: TapOutput) -> None:
        """Handle one datagram: step batches and request infos into ``out`` (the public entry point)."""
        try:
            raw = loads_like_json(data)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            self.counts["malformed"] += 1
            return
        self.counts["received"] += 1
        handle_isolated(self.counts, "hook", lambda: self._message(raw, out, hash(data)))

    def claims(self, request_id: str) -> bool:
        """Whether the hook supplies this request's work (so the plugin and spans must not)."""
        return request_id in self._claimed

    # ---- internals -------------------------------------------------------------------------
    def _message(self, raw: Any, out: TapOutput, digest: int = 0) -> None:
        head = parse_head(raw, self._wall())
        base_s = self.to_mono(head.wall_s)
        if not self._sequence(head.pid, head.seq, base_s, out, digest):
            return
        v.note_ahead(self.counts, head.ahead_s)
        if head.model:
            self.model = head.model
        for new in v.checked_rows(self.counts, raw, "new", parse_new):
            self._new(new, base_s)
        for step in v.checked_rows(self.counts, raw, "steps", parse_step):
            self._step(step, base_s, out)
        for fin in v.checked_rows(self.counts, raw, "fin", parse_fin):
            self._end(fin.idx, fin.output_tokens, fin.reason, base_s, out)
        for idx in v.checked_rows(self.counts, raw, "gone", parse_gone):
            self._end(idx, None, "abort", base_s, out)

    def _sequence(self, pid: int, seq: int, base_s: float, out: TapOutput, digest: int) -> bool:
        """Use the datagram? A new pid (or the same pid from 0 again) restarts; a replay is dropped."""
        if pid != self._pid or (seq == 0 and self._seqs.last not in (None, 0) and not self._seqs.seen(0)):
            if self._pid is not None:
                self._restart(base_s, out)
            self._pid = pid
            self._seqs.reset()
        return self._seqs.see(seq, digest)

    def _restart(self, base_s: float, out: TapOutput) -> None:
        """The engine restarted: its requests in flight will not finish; they end as aborted."""
        self.counts["restarts"] += 1
        self._last = None
        for idx in list(self._live):
            self._end(idx, None, "abort", base_s, out)
        self._recent.clear()
        self._slot.clear()
        self._slots = Slots()
        self._last_slots = np.zeros(0, dtype=np.int64)

    def _new(self, row: NewRow, base_s: float) -> None:
        if row.idx in self._slot:
            self.counts["rejected_duplicate"] += 1
            return
        try:
            request_id = v.request_id(normalize_request_id(row.request_id), "new request_id")
        except v.Rejected as err:
            v.note(self.counts, err)
            return
        slot = self._slots.take(request_id, row.prompt_tokens)
        req = Req(row, request_id, base_s, slot)
        self._live[row.idx] = req
        self._slot.set(row.idx, slot)
        if len(self._live) > self.max_requests:
            self._forget(*self._live.popitem(last=False))
            self.counts["evicted"] += 1
        self._claimed.add(req.request_id)

    def _forget(self, idx: int, req: Req) -> None:
        if (self._last_slots == req.slot).any():  # the slot may be taken again: its id must not be reused
            self._last_slots = np.zeros(0, dtype=np.int64)
        self._slot.pop(idx)
        self._slots.live[req.slot] = False
        self._slots.free.append(req.slot)

    def _step(self, step: StepArrays, base_s: float, out: TapOutput) -> None:
        t0_s, t1_s = base_s - step.t0_ago_s, base_s - step.t1_ago_s
        self._gap(t0_s, out)
        slots = self._slot.lookup(step.idx)
        k, p = step.scheduled, step.before
        if slots.size and slots.min() < 0:
            known = slots >= 0
            self.counts["unknown_member"] += slots.size - int(np.count_nonzero(known))
            slots, k, p = slots[known], k[known], p[known]
        self.counts["steps"] += 1
        self.counts["members"] += slots.size
        if not slots.size:
            return
        st = self._slots
        n_done = len(slots) - int(np.count_nonzero(st.live[slots]))
        if n_done:
            self.counts["after_fin"] += n_done
        high, last_k, prompt = st.high[slots], st.last_k[slots], st.prompt[slots]
        # prefill: a prompt token, or a recomputed one after a step back by more than the previous
        # step's tokens (a preemption; a speculative-decoding rollback is never that far)
        first = np.where(high - p > last_k, np.maximum(prompt, high), prompt)
        phase = np.where((p < first) & (k > 0), int(Phase.PREFILL), int(Phase.DECODE)).astype(np.int8)
        st.high[slots] = np.maximum(high, p + k)
        st.last_k[slots] = k
        st.end_s[slots] = t1_s
        last = self._last
        if last is not None and np.array_equal(slots, self._last_slots):
            ids = last.request_ids  # the same members as the step before: the same tuple (cheap downstream)
        else:
            got = itemgetter(*slots.tolist())(st.ids)  # a tuple at C speed (one member: the id itself)
            ids = got if isinstance(got, tuple) else (got,)
        kf = k.astype(np.float64)
        batch = StepBatch(t0_s, t1_s, ids, phase, kf, kf * p + kf * (kf + 1) / 2)
        out.events.append(batch)
        self._last, self._last_slots = batch, slots

    def _gap(self, t0_s: float, out: TapOutput) -> None:
        """The CPU gap since the previous step (up to ``max_gap_s``) for that step's members."""
        last = self._last
        if last is None or not MIN_GAP_S < t0_s - last.t1_s <= self.max_gap_s:
            return
        zeros = np.zeros(len(last.request_ids))
        out.events.append(StepBatch(last.t1_s, t0_s, last.request_ids, last.phase, zeros, zeros, steps=0.0))

    def _end(self, idx: int, output_tokens: int | None, reason: str, base_s: float, out: TapOutput) -> None:
        req = self._live.pop(idx, None)
        if req is None:
            self.counts["unknown_end"] += 1
            return
        self._recent[idx] = req
        while len(self._recent) > _RECENT:
            self._forget(*self._recent.popitem(last=False))
        st, slot = self._slots, req.slot
        st.live[slot] = False
        prompt, high, end_s = int(st.prompt[slot]), int(st.high[slot]), float(st.end_s[slot])
        if output_tokens is None:  # aborted: the tokens sampled so far
            output_tokens = high - prompt + 1 if high >= prompt else 0
            self.counts["aborted"] += 1
        else:
            self.counts["finished"] += 1
        out.infos.append(
            RequestInfo(
                req.request_id,
                model=self.model,
                operation="chat" if req.raw.startswith("chatcmpl-") else "text_completion",
                start_s=req.arrival_s,
                end_s=end_s if end_s == end_s else base_s,  # NaN: it never had a step
                prompt_tokens=prompt,
                output_tokens=output_tokens,
                attributes={"vllm.request_id": req.raw, "finish_reason": reason},
            )
        )
