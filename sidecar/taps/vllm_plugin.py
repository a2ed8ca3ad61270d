"""Receiver of the vLLM plugin's datagrams (UDP): per-iteration work and finished requests.

The plugin (servers/vllm/plugin.py) sends one datagram per engine iteration
(format: :mod:`sidecar.contracts.vllm_wire`). ``due()`` drains the socket (non-blocking, on the
sidecar's loop) and turns the stream into

* **decode work per iteration**: every request whose prefill has finished and
  that has not finished yet decodes one token in each iteration (continuous
  batching), over ``[previous iteration end, this iteration end]``, reading a
  KV cache of ``prompt + generated`` tokens: one :class:`StepBatch` per iteration
  for all of them (:mod:`.vllm_plugin_batch`), not an object per request;
* **prefill work** when a request's first token arrives: its computed prompt
  tokens over ``[end - prefill_s, end]``, with causal attention pairs;
* a :class:`RequestInfo` when it finishes (tokens, start = arrival, end).

The plugin "claims" every request it emitted work for (:meth:`claims`), so the
span handler does not add the same work again. When the scheduler hook is on
(``claimed_by``: :meth:`sidecar.taps.vllm_hook.HookReceiver.claims`), requests
the hook claims get no work from here (the hook's per-step work is exact);
their infos and timings still come from here. When the plugin cannot see
per-request starts (``live: false``), finished requests get whole-phase work
from their timings, as spans would; not one that was in flight when the hook
began to be heard (``adopted_before``: a sidecar started while vLLM ran), whose
steps the hook took as ``unknown-<pid>-<idx>`` (counted ``work_adopted_by_hook``).

Faults: UDP needs no connection, so either side can restart. Undecodable datagrams are
counted (``malformed``); every part of a datagram (``wall``, ``it``, ``sched``, each
``start``/``fin``/``gone`` row) is checked on its own (:mod:`.vllm_plugin_rows`,
:mod:`.validate`): a bad part is dropped and counted as ``rejected_<reason>`` and the
good rows next to it are used; a ``wall`` that cannot be dated rejects its datagram, one
after the sidecar's clock is taken as the time it was read (``wall_ahead``:
:func:`~sidecar.taps.validate.sent_unix_s`). Sequence numbers (:mod:`.sequence`): gaps
count ``lost``, late datagrams ``reordered``, replays ``rejected_duplicate`` (dropped),
jumps beyond a window ``seq_jumps`` (not losses). A repeated start or finish of one
request is a ``rejected_duplicate``. Each vLLM process id is a sender of its own
(:class:`~sidecar.taps.vllm_plugin_sender.PluginSender`): a process that restarted (a new
pid heard after it was quiet) or went quiet while another speaks has its requests in flight
ended as aborted (``restarts``, ``senders_gone``, ``aborted_on_restart``: :mod:`.senders`);
a second engine on the port, or a datagram forged with another pid, ends nothing of a process
that is sending (a fin of a request only another process decodes is ``rejected_other_sender``; a
process ended aborts none another decodes or that finished; beyond 16 processes all sending, a new
pid is refused). At most ``max_decoding`` starts without a fin are kept over all processes (the
oldest is dropped, ``evicted``); at most ``max_per_drain`` datagrams are read per tick, the
kernel buffer bounds the rest, and they are handled for at most
:data:`~sidecar.taps.udp.DRAIN_BUDGET_S` a tick (those left, the next). A bug while handling
one datagram is counted (``internal_errors``) and logged, never raised into the tick.
Units: seconds, tokens.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sidecar.attribution.events import Phase, Work, WorkEvent
from sidecar.attribution.task_labels import Info
from sidecar.contracts.vllm_wire import decode
from sidecar.taps import validate as v
from sidecar.taps.senders import Senders
from sidecar.taps.spans import TapOutput
from sidecar.taps.udp import UdpEndpoint, feed_all, handle_isolated, receive
from sidecar.taps.vllm_plugin_infos import aborted_infos, finished_info
from sidecar.taps.vllm_plugin_rows import (
    FinishRow,
    StartRow,
    parse_finish,
    parse_iteration,
    parse_sched,
    parse_start,
)
from sidecar.taps.vllm_plugin_seen import SeenIds
from sidecar.taps.vllm_plugin_sender import PluginSender
from sidecar.taps.vllm_plugin_tokens import TokenHistory
from sidecar.taps.vllm_span_format import checked_id
from sidecar.taps.vllm_spans import phase_events

__all__ = ["PluginReceiver"]

log = logging.getLogger(__name__)


def _gone_id(raw: Any) -> str:
    return checked_id(raw, "gone id")[1]


class PluginReceiver(UdpEndpoint):
    """A UDP endpoint for the vLLM stat-logger plugin; a work source and a service."""

    name = "vLLM plugin receiver"

    def __init__(
        self,
        to_mono: Callable[[float], float],
        *,
        host: str = "127.0.0.1",
        port: int = 9466,
        default_model: str = "unknown",
        max_gap_s: float = 0.5,
        max_per_drain: int = 50_000,
        claimed_by: Callable[[str], bool] | None = None,
        adopted_before: Callable[[], float] = lambda: -math.inf,
        max_decoding: int = 4096,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.to_mono = to_mono
        self.claimed_by = claimed_by  # another tap with better work for a request (the scheduler hook)
        self.adopted_before = adopted_before  # the hook's (HookReceiver.adopted_before)
        self.host, self.port = host, port
        self.model = default_model
        self.max_gap_s = max_gap_s
        self.max_per_drain = max_per_drain
        self.max_decoding = max_decoding  # starts without a fin kept; beyond, the oldest is dropped
        self.counts: Counter[str] = Counter()
        self.sched: tuple[float, float, float] | None = None  # running, waiting, KV usage (0..1)
        self.live = False
        self._wall = wall  # Unix seconds now, to date-check datagrams
        self.senders: Senders[PluginSender] = Senders(
            lambda pid, sent_s: PluginSender(self.counts, sent_s), self._end_sender, self.counts
        )
        self._cur = PluginSender(self.counts, 0.0)  # the sender of the datagram being handled
        self.seen = SeenIds()  # recent ids claimed (work emitted here) and finished (to refuse replays)
        self.tokens = TokenHistory()  # for the comparison with vLLM's /metrics
        self._left: list[bytes] = []  # read, not handled within the last tick's budget: the next's first

    # ---- service ---------------------------------------------------------------------
    def start(self) -> int:
        port = super().start()
        self.tokens.started_wall_s = time.time()
        return port

    # ---- source ----------------------------------------------------------------------
    def due(self, now_s: float) -> tuple[list[Work], list[Info]]:
        """Drain waiting datagrams; return the work and request infos they describe."""
        return self.handle(self.receive(), now_s)

    def receive(self) -> list[bytes]:
        """The waiting datagrams, read but not handled (see :meth:`VllmTaps.due` for why apart): those
        a tick's budget left unhandled first, then at most ``max_per_drain`` in all."""
        left, self._left = self._left, []
        return left + receive(self._sock, self.max_per_drain - len(left), self.counts)

    def handle(self, datagrams: list[bytes], now_s: float) -> tuple[list[Work], list[Info]]:
        """Datagrams :meth:`receive` read: the work and request infos they describe (and those of the
        requests of a process gone quiet beside others by ``now_s``: :mod:`.senders`). Those the
        tick's budget (:data:`~sidecar.taps.udp.DRAIN_BUDGET_S`) leaves are handled next tick."""
        out, self._left = feed_all(datagrams, self.feed, self.counts)
        self.senders.sweep(now_s, out)
        return out.events, out.infos

    def feed(self, data: bytes, out: TapOutput) -> None:
        """Handle one datagram (also the entry point for tests)."""
        try:
            msg = decode(data)
        except ValueError:
            self.counts["malformed"] += 1
            return
        self.counts["received"] += 1
        handle_isolated(self.counts, "plugin", lambda: self._message(msg, out, hash(data)))

    def claims(self, request_id: str) -> bool:
        """Whether the plugin supplied this request's work (so spans must not)."""
        return self.seen.claimed(request_id)

    def tokens_until(self, unix_s: float) -> tuple[int, int] | None:
        """Cumulative (prompt, generation) tokens of iterations recorded by ``unix_s``, if known."""
        return self.tokens.until(unix_s)

    # ---- internals -------------------------------------------------------------------------
    def _message(self, msg: dict[str, Any], out: TapOutput, digest: int = 0) -> None:
        wall_s, ahead_s = v.sent_unix_s(msg["wall"], "wall", self._wall())
        pid, seq = msg["pid"], msg["seq"]
        sent_s = self.to_mono(wall_s)
        self._cur = self.senders.heard(pid, sent_s, out, self.senders.judged_s(sent_s, ahead_s))
        if not self._cur.seqs.see(seq, digest):  # digest: a long message's parts share one seq
            return
        if self._cur.seqs.skipped:
            self._cur.lost_datagram()
        v.note_ahead(self.counts, ahead_s)
        model = msg.get("model")
        if isinstance(model, str) and model and len(model) <= 256 and model.isprintable():
            self.model = model
        self.live = msg.get("live", False) is True
        t_rec = self.to_mono(wall_s)
        t_end = self._parts(msg, wall_s, t_rec, out)
        for start in v.checked_rows(self.counts, msg, "start", parse_start):
            self._apply(self._start, start, t_end, out)
        for fin in v.checked_rows(self.counts, msg, "fin", parse_finish):
            self._apply(self._finish, fin, (t_rec, t_end), out)
        for request_id in v.checked_rows(self.counts, msg, "gone", _gone_id):
            if self._cur.decoding.remove(request_id):  # left vLLM without finishing (aborted): no more work
                self.counts["aborted"] += 1

    def _end_sender(self, sender: PluginSender, at_s: float, out: TapOutput) -> None:
        """A vLLM process restarted or went quiet (:mod:`.senders`): its requests in flight will not
        finish; they end as aborted (counted), at its last iteration (else ``at_s``: when that was
        found)."""
        end_s = sender.last_end if sender.last_end is not None else at_s
        left = [
            row
            for row in sender.decoding.drain()
            if not self.seen.finished(row[0]) and not self._elsewhere(row[0], sender)
        ]
        aborted = aborted_infos(left, self.model, end_s)
        if aborted:
            self.counts["aborted_on_restart"] += len(aborted)
            out.infos.extend(aborted)

    def _parts(self, msg: dict[str, Any], wall_s: float, t_rec: float, out: TapOutput) -> float:
        """Handle ``sched`` and ``it``, each on its own; returns when the iteration ended."""
        t_end = t_rec
        try:
            if "sched" in msg:
                self.sched = parse_sched(msg["sched"])
        except v.Rejected as err:
            v.note(self.counts, err)
        if msg.get("it") is None:
            return t_end
        try:
            it = parse_iteration(msg["it"])
        except v.Rejected as err:
            v.note(self.counts, err)
            return t_end
        t_end = t_rec - it.end_ago_s
        self._iteration(t_end, it.generation_tokens, out)
        self.tokens.add(wall_s, it.prompt_tokens, it.generation_tokens)
        self.counts["iterations"] += 1
        return t_end

    def _apply(
        self, apply: Callable[[Any, Any, TapOutput], None], row: Any, when: Any, out: TapOutput
    ) -> None:
        """Apply one parsed row; one refused (a duplicate, say) is counted and changes nothing."""
        try:
            apply(row, when, out)
        except v.Rejected as err:
            v.note(self.counts, err)
            log.debug("plugin row rejected: %s", err)

    def _iteration(self, t_end: float, generation_tokens: int, out: TapOutput) -> None:
        cur = self._cur
        last = cur.last_end
        if last is not None and 0.0 < t_end - last <= self.max_gap_s:
            t_start = last
            cur.step_s += 0.1 * ((t_end - last) - cur.step_s)
        else:
            t_start = t_end - cur.step_s
        cur.last_end = max(t_end, last or t_end)
        if cur.decoding and generation_tokens < len(cur.decoding):
            self.counts["membership_mismatch"] += 1
        batch = cur.decoding.step(t_start, t_end)  # one decode token for every request decoding
        if batch is not None:
            out.events.append(batch)

    def _start(self, row: StartRow, t_end: float, out: TapOutput) -> None:
        request_id = row.request_id
        if request_id in self._cur.decoding or self.seen.finished(request_id):
            raise v.Rejected("duplicate", f"start {request_id!r}: already started")
        self.counts["starts"] += 1
        if self.claimed_by is not None and self.claimed_by(request_id):
            self.counts["claimed_by_hook"] += 1
            self.seen.claim(request_id)
            return
        if row.computed_tokens > 0:
            computed, prefill_s = row.computed_tokens, row.prefill_s
            pairs = computed * (row.prompt_tokens - (computed - 1) / 2)
            step_s = self._cur.step_s
            steps = max(1.0, round(prefill_s / step_s)) if step_s > 0 else 1.0
            out.events.append(
                WorkEvent(request_id, t_end - prefill_s, t_end, Phase.PREFILL, float(computed), steps, pairs)
            )
        self._cur.decoding.add(request_id, row.prompt_tokens)
        if sum(len(s.decoding) for s in self.senders) > self.max_decoding:  # starts whose fin never came:
            biggest = self.senders.biggest(lambda s: len(s.decoding))  # the oldest of the process
            if biggest is not None:  # holding the most stops decoding
                biggest.decoding.remove_oldest()
                self.counts["evicted"] += 1
        self.seen.claim(request_id)

    def _elsewhere(self, request_id: str, than: PluginSender | None = None) -> bool:
        """Whether a process other than ``than`` (default: the datagram's) decodes the request. A fin
        must come from a process that started it, where one did (one forged with another pid ended
        the engine's request and kept it in the engine's batch after its real fin), and a process
        ended or gone aborts none that another decodes or that ended (one forged start with another
        pid, its sender swept, made the engine's request aborted while it decoded)."""
        than = self._cur if than is None else than
        return any(request_id in s.decoding for s in self.senders if s is not than)

    def _finish(self, row: FinishRow, when: tuple[float, float], out: TapOutput) -> None:
        t_rec, t_end = when
        request_id = row.request_id
        if self.seen.finished(request_id):
            self._cur.decoding.remove(request_id)  # no more steps of it here, whoever ended it
            raise v.Rejected("duplicate", f"fin {request_id!r}: already finished")
        if request_id not in self._cur.decoding and self._elsewhere(request_id):
            raise v.Rejected("other_sender", f"fin {request_id!r}: decoding in another process only")
        elsewhere = self.claimed_by is not None and self.claimed_by(request_id)
        decoding = self._cur.decoding.remove(request_id)
        work_lost = request_id in self._cur.gapped  # decoding when a datagram was lost
        self._cur.gapped.discard(request_id)
        if decoding and elsewhere:  # the hook's claim came after our start: both counted it
            self.counts["double_counted"] += 1
        start_s = t_rec - row.e2e_s
        if not decoding and not self.claims(request_id) and not elsewhere:
            if start_s < self.adopted_before():  # in flight when the hook began: it took the steps
                self.counts["work_adopted_by_hook"] += 1  # as unknown-<pid>-<idx>
            else:
                tokens = (row.prompt_tokens, row.generation_tokens, row.prefill_s, row.decode_s)
                out.events.extend(phase_events(request_id, t_end, *tokens))
                self.counts["whole_phase"] += 1
            self.seen.claim(request_id)
        out.infos.append(finished_info(row, self.model, start_s, t_end, work_lost=work_lost))
        self.seen.finish(request_id)
        self.counts["finished"] += 1
