"""One engine process as the scheduler hook's receiver hears it: its requests, steps and ends.

:class:`~sidecar.taps.vllm_hook.HookReceiver` keeps one :class:`HookSender` per pid
(:mod:`.senders`): the hook numbers a process's requests (``idx``) from 0, so the numbers,
slots, sequence numbers and the last step (whose members own the CPU gap after it) are the
process's own. What the senders share (:class:`HookShared`): the tap's counters, the ids it
claims, the gap limit and the count of requests in flight over all of them. The step and end
rules are the receiver's (its docstring). Units: seconds, tokens.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from operator import itemgetter

import numpy as np

from sidecar.attribution.events import WORK_LOST, Phase, RequestInfo, StepBatch
from sidecar.contracts.scheduler_wire import PARALLEL_CHILD, NewRow
from sidecar.recent_ids import RecentIds
from sidecar.taps import validate as v
from sidecar.taps.sequence import SeqTracker
from sidecar.taps.spans import TapOutput
from sidecar.taps.vllm_hook_index import IdxSlots
from sidecar.taps.vllm_hook_rows import StepArrays
from sidecar.taps.vllm_hook_slots import Family, Req, Slots
from sidecar.taps.vllm_span_format import checked_id, operation_of

__all__ = ["MIN_GAP_S", "HookSender", "HookShared"]

# the hook sends times rounded to 1 us: back-to-back steps (async scheduling) can come 1-2 us
# apart; such a "gap" is rounding, not CPU time, and would double the rows attribution handles
MIN_GAP_S = 2e-6
_RECENT = 4096  # finished requests whose idx still resolves (a late step is still counted)
MAX_ADOPTED = 4096  # members without their new row made requests of their own, at once, per process


@dataclass
class HookShared:
    """What every sender of one receiver shares."""

    counts: Counter[str]
    claimed: RecentIds[str]
    max_gap_s: float
    live: int = 0  # requests in flight over all senders (the receiver caps it: evict_oldest)


class HookSender:
    """One process's requests (by its ``idx``), their per-request arrays and its last step."""

    def __init__(self, shared: HookShared, model: str, heard_s: float, pid: int = 0) -> None:
        self.shared = shared
        self.pid = pid
        self._adopted: set[int] = set()  # idx of live members adopted without their new row
        self.model = model
        self.heard_s = heard_s  # when its latest datagram was sent (monotonic s)
        self.seqs = SeqTracker(shared.counts)
        self.live: OrderedDict[int, Req] = OrderedDict()
        self.gapped: set[int] = set()  # idx in flight when a datagram was lost: their work may be short
        self._recent: OrderedDict[int, Req] = OrderedDict()
        self.slot = IdxSlots()  # idx (live or recent) -> slot
        self._slots = Slots()
        self._families: dict[str, Family] = {}  # parallel-sampling requests in flight, by id
        self._last: StepBatch | None = None  # the previous step, whose members own the CPU gap after it
        self._last_slots = np.zeros(0, dtype=np.int64)  # its members' slots (their ids tuple is reused)

    def end_all(self, at_s: float, out: TapOutput) -> None:
        """The process is gone: its requests in flight will not finish; they end as aborted."""
        self._last = None
        for idx in list(self.live):
            self.end(idx, None, "abort", at_s, out)

    def new(self, row: NewRow, base_s: float, out: TapOutput | None = None) -> None:
        if row.idx in self.slot:
            self.shared.counts["rejected_duplicate"] += 1
            return
        child = PARALLEL_CHILD.fullmatch(row.request_id)
        try:
            raw = child.group(1) if child else row.request_id  # a child goes by its parent's id
            key = checked_id(raw, "new request_id")[1]
        except v.Rejected as err:
            v.note(self.shared.counts, err)
            return
        family = self._families.get(key) if child else None
        request_id = family.request_id if family is not None else key
        if family is None and key in self.shared.claimed:  # an id in flight or recently final: reused
            # its own record, its work not refused or merged (the id cut to fit: the API looks it up)
            request_id = v.suffixed_id(key, f"~{self.pid}-{row.idx}")
            self.shared.counts["renamed_duplicate_id"] += 1
        slot = self._slots.take(request_id, row.prompt_tokens)
        req = Req(row, request_id, base_s, slot, family=key if child else None)
        self.live[row.idx] = req
        self.slot.set(row.idx, slot)
        self.shared.live += 1
        self.shared.claimed.add(req.request_id)
        if child:
            self._child(req, raw, key, family, out)

    def renew(self, row: NewRow, base_s: float, out: TapOutput) -> None:
        """A ``new`` row sent again (the wire's ``renew``): nothing if this sidecar has it (or had it:
        the request is still recent here); else its first copy was lost: taken now, counted
        ``new_renewed``, and the request marked as having lost work (the lost datagram may have held
        steps of it). A sidecar that started after the first copy was sent takes it the same way."""
        if row.idx in self.slot:
            return
        self.new(row, base_s, out)
        if row.idx in self.live:
            self.shared.counts["new_renewed"] += 1
            self.gapped.add(row.idx)

    def _child(self, req: Req, raw: str, key: str, family: Family | None, out: TapOutput | None) -> None:
        """A parallel-sampling child: one of its parent's ``family`` (None: the first). At the first, an
        exact info with no end holds the request open: the plugin's and the span's infos, which see
        one child each under the parent's id, must not end it or set its tokens
        (:meth:`RequestInfo.over`)."""
        if family is None:
            family = self._families[key] = Family(raw, req.request_id, req.arrival_s)
            if out is not None:
                out.infos.append(
                    RequestInfo(req.request_id, model=self.model, start_s=req.arrival_s, exact=True)
                )
        family.live += 1
        family.size += 1
        self.shared.counts["parallel_children"] += 1

    def evict_oldest(self) -> None:
        """Forget the oldest request in flight (over the cap: no info, counted ``evicted``)."""
        if self.live:
            idx, req = self.live.popitem(last=False)
            self._forget(idx, req)
            self.shared.live -= 1
            self.shared.counts["evicted"] += 1
            family = self._families.get(req.family or "")
            if family is not None:
                family.live -= 1
                family.lost = True
                if family.live <= 0:
                    del self._families[req.family or ""]

    def _forget(self, idx: int, req: Req) -> None:
        self.gapped.discard(idx)
        self._adopted.discard(idx)
        if (self._last_slots == req.slot).any():  # the slot may be taken again: its id must not be reused
            self._last_slots = np.zeros(0, dtype=np.int64)
        self.slot.pop(idx)
        self._slots.live[req.slot] = False
        self._slots.free.append(req.slot)

    def step(self, step: StepArrays, base_s: float, out: TapOutput) -> None:
        t0_s, t1_s = base_s - step.t0_ago_s, base_s - step.t1_ago_s
        self._gap(t0_s, out)
        counts = self.shared.counts
        slots = self.slot.lookup(step.idx)
        k, p = step.scheduled, step.before
        if slots.size and slots.min() < 0:
            unknown = slots < 0
            counts["unknown_member"] += int(np.count_nonzero(unknown))
            self._adopt(step.idx[unknown], p[unknown], base_s)
            slots = self.slot.lookup(step.idx)
            known = slots >= 0  # beyond the cap on adopted ones: skipped
            slots, k, p = slots[known], k[known], p[known]
        counts["steps"] += 1
        counts["members"] += slots.size
        if not slots.size:
            return
        st = self._slots
        n_done = len(slots) - int(np.count_nonzero(st.live[slots]))
        if n_done:
            counts["after_fin"] += n_done
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
        batch = StepBatch(t0_s, t1_s, ids, phase, kf, kf * p + kf * (kf + 1) / 2, timed=True)
        out.events.append(batch)
        self._last, self._last_slots = batch, slots

    def _adopt(self, idx: np.ndarray, before: np.ndarray, base_s: float) -> None:
        """Members of a step whose ``new`` row this sidecar never had (it started, or restarted, while
        they ran; or the row was lost or refused): each becomes a request of its own, named
        ``unknown-<pid>-<idx>``, so it takes its share of the step's energy instead of leaving it
        to the members beside it; its record is ``energy_unknown`` (its work before is not known).
        At most :data:`MAX_ADOPTED` at once per process; more are skipped, as before."""
        for i, kv in zip(*np.unique(idx, return_index=True), strict=True):
            if len(self._adopted) >= MAX_ADOPTED:
                return
            n = int(i)
            self.new(NewRow(n, f"unknown-{self.pid}-{n}", int(before[kv]), 0.0), base_s)
            if n in self.live:
                self._adopted.add(n)
                self.gapped.add(n)

    def _gap(self, t0_s: float, out: TapOutput) -> None:
        """The CPU gap since the previous step (up to ``max_gap_s``) for that step's members."""
        last = self._last
        if last is None or not MIN_GAP_S < t0_s - last.t1_s <= self.shared.max_gap_s:
            return
        zeros = np.zeros(len(last.request_ids))
        out.events.append(StepBatch(last.t1_s, t0_s, last.request_ids, last.phase, zeros, zeros, steps=0.0))

    def end(self, idx: int, output_tokens: int | None, reason: str, base_s: float, out: TapOutput) -> None:
        req = self.live.pop(idx, None)
        counts = self.shared.counts
        if req is None:
            counts["unknown_end"] += 1
            return
        self.shared.live -= 1
        self._adopted.discard(idx)
        attributes = {"vllm.request_id": req.raw, "finish_reason": reason}
        if idx in self.gapped:
            self.gapped.discard(idx)
            attributes[WORK_LOST] = "true"
        self._recent[idx] = req
        while len(self._recent) > _RECENT:
            self._forget(*self._recent.popitem(last=False))
        st, slot = self._slots, req.slot
        st.live[slot] = False
        prompt, high, end_s = int(st.prompt[slot]), int(st.high[slot]), float(st.end_s[slot])
        # exact: the engine's count; an abort's (a stop string the front end found, a client gone) is
        # an estimate, one token past a stop string: the span's usage then stands over it
        exact = output_tokens is not None
        if output_tokens is None:  # aborted: the tokens sampled so far
            output_tokens = high - prompt + 1 if high >= prompt else 0
            counts["aborted"] += 1
        else:
            counts["finished"] += 1
        end_s = end_s if end_s == end_s else base_s  # NaN: it never had a step
        family = self._families.get(req.family or "")
        req_raw, arrival_s = req.raw, req.arrival_s
        if family is not None:  # a parallel-sampling child: the request ends with its last child
            if not family.child_ended(output_tokens, end_s, reason, WORK_LOST in attributes):
                return
            del self._families[req.family or ""]
            attributes, req_raw, arrival_s = family.attributes(), family.raw, family.arrival_s
            output_tokens, end_s = family.output_tokens, family.end_s
            exact = True  # the sum over the children: the plugin and the span see one child each
        out.infos.append(
            RequestInfo(
                req.request_id,
                model=self.model,
                operation=operation_of(req_raw),
                start_s=arrival_s,
                end_s=end_s,
                prompt_tokens=prompt,
                output_tokens=output_tokens,
                attributes=attributes,
                exact=exact,
            )
        )
