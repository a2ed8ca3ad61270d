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

Times: ``to_mono(wall) - ago``. It claims every request it hears of
(:meth:`claims`), so neither the stat-logger plugin nor the span handler adds
the same request's work again (the hook sends a request's first step at once,
before vLLM's front end hears of it).

Counters (``counts``): received, malformed (and ``malformed:<reason>``), lost
(datagrams missing from the sequence; a jump of more than 10,000 counts as a
restart instead), restarts (a new pid, or the sequence jumping: the old
in-flight requests end as aborted), steps, members, unknown_member (an idx
without its ``new`` row, e.g. lost: that member is skipped), after_fin,
evicted (more than ``max_requests`` in flight). Units: seconds, tokens.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter, OrderedDict
from collections.abc import Callable

import numpy as np

from sidecar.attribution.events import Phase, RequestInfo, StepBatch, WorkEvent
from sidecar.contracts.scheduler_wire import DEFAULT_PORT, Message, NewRow, StepRow, decode
from sidecar.taps.spans import TapOutput
from sidecar.taps.vllm_spans import normalize_request_id

__all__ = ["HookReceiver"]

log = logging.getLogger(__name__)

_MAX_CLAIMS = 100_000
_RECENT = 4096  # finished requests whose idx still resolves (a late step is still counted)
_MAX_JUMP = 10_000


class _Req:
    """One request in flight: ids, prompt, arrival, furthest KV position, last step."""

    __slots__ = ("arrival_s", "end_s", "high", "last_k", "prompt", "raw", "request_id")

    def __init__(self, row: NewRow, base_s: float) -> None:
        self.raw = row.request_id
        self.request_id = normalize_request_id(row.request_id)
        self.prompt = row.prompt_tokens
        self.arrival_s = base_s - row.arrival_ago_s
        self.end_s: float | None = None
        self.high = 0  # furthest KV position reached (tokens computed at least once)
        self.last_k = 0  # tokens in its previous step


class HookReceiver:
    """A UDP endpoint for the scheduler hook; a work source and a service."""

    def __init__(
        self,
        to_mono: Callable[[float], float],
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        default_model: str = "unknown",
        max_per_drain: int = 50_000,
        max_requests: int = 100_000,
    ) -> None:
        self.to_mono = to_mono
        self.host, self.port = host, port
        self.model = default_model
        self.max_per_drain = max_per_drain
        self.max_requests = max_requests
        self.counts: Counter[str] = Counter()
        self._sock: socket.socket | None = None
        self._pid: int | None = None
        self._seq = -1  # highest seq seen of this pid
        self._live: OrderedDict[int, _Req] = OrderedDict()
        self._recent: OrderedDict[int, _Req] = OrderedDict()
        self._claimed: OrderedDict[str, None] = OrderedDict()

    # ---- service ---------------------------------------------------------------------
    def start(self) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        sock.bind((self.host, self.port))
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        log.info("vLLM scheduler hook receiver on udp://%s:%d", self.host, self.port)
        return int(self.port)

    def stop(self, grace_s: float = 1.0) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # ---- source ----------------------------------------------------------------------
    def due(self, now_s: float) -> tuple[list[WorkEvent | StepBatch], list[RequestInfo]]:
        """Drain waiting datagrams; return the step batches and request infos they describe."""
        out = TapOutput()
        sock = self._sock
        for _ in range(self.max_per_drain if sock is not None else 0):
            try:
                data = sock.recv(65536)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.counts["errors"] += 1
                break
            self.feed(data, out)
        return out.events, out.infos

    def feed(self, data: bytes, out: TapOutput) -> None:
        """Handle one datagram: step batches and request infos into ``out`` (the public entry point)."""
        try:
            msg = decode(data)
        except ValueError as err:
            self.counts["malformed"] += 1
            self.counts[f"malformed:{str(err).split(':')[0][:40]}"] += 1
            return
        self.counts["received"] += 1
        base_s = self.to_mono(msg.wall)
        self._sequence(msg, base_s, out)
        if msg.model:
            self.model = msg.model
        for row in msg.new:
            self._new(row, base_s)
        for step in msg.steps:
            self._step(step, base_s, out)
        for fin in msg.fin:
            self._end(fin.idx, fin.output_tokens, fin.reason, base_s, out)
        for idx in msg.gone:
            self._end(idx, None, "abort", base_s, out)

    def claims(self, request_id: str) -> bool:
        """Whether the hook supplies this request's work (so the plugin and spans must not)."""
        return request_id in self._claimed

    # ---- internals -------------------------------------------------------------------------
    def _sequence(self, msg: Message, base_s: float, out: TapOutput) -> None:
        if msg.pid == self._pid:
            jump = msg.seq - self._seq
            if 1 <= jump <= _MAX_JUMP + 1:
                self.counts["lost"] += jump - 1
            elif jump <= 0 and msg.seq != 0 and -jump < _MAX_JUMP:
                self.counts["out_of_order"] += 1
                return
            else:  # a far jump or a sequence restarting at 0: a new sender on this pid
                self._restart(base_s, out)
        else:
            if self._pid is not None:
                self._restart(base_s, out)
            self._pid = msg.pid
        self._seq = msg.seq

    def _restart(self, base_s: float, out: TapOutput) -> None:
        """The engine restarted: its requests in flight will not finish; they end as aborted."""
        self.counts["restarts"] += 1
        for idx in list(self._live):
            self._end(idx, None, "abort", base_s, out)
        self._recent.clear()

    def _new(self, row: NewRow, base_s: float) -> None:
        if row.idx in self._live or row.idx in self._recent:
            self.counts["duplicate_new"] += 1
            return
        req = _Req(row, base_s)
        self._live[row.idx] = req
        if len(self._live) > self.max_requests:
            self._live.popitem(last=False)
            self.counts["evicted"] += 1
        self._claimed[req.request_id] = None
        while len(self._claimed) > _MAX_CLAIMS:
            self._claimed.popitem(last=False)

    def _step(self, step: StepRow, base_s: float, out: TapOutput) -> None:
        t1_s = base_s - step.t1_ago_s
        ids: list[str] = []
        phase: list[int] = []
        units: list[int] = []
        pairs: list[float] = []
        live, recent = self._live, self._recent
        for i, k, p in zip(step.idx, step.scheduled, step.computed_before, strict=True):
            req = live.get(i)
            if req is None:
                req = recent.get(i)
                self.counts["unknown_member" if req is None else "after_fin"] += 1
                if req is None:
                    continue
            back = req.high - p  # a step back: recompute after preemption (not a spec rollback)
            first = max(req.prompt, req.high) if back > req.last_k else req.prompt
            ids.append(req.request_id)
            phase.append(Phase.PREFILL if p < first and k > 0 else Phase.DECODE)
            units.append(k)
            pairs.append(k * p + k * (k + 1) / 2)
            req.high = max(req.high, p + k)
            req.last_k = k
            req.end_s = t1_s
        self.counts["steps"] += 1
        self.counts["members"] += len(ids)
        if not ids:
            return
        out.events.append(
            StepBatch(
                base_s - step.t0_ago_s,
                t1_s,
                tuple(ids),
                np.array(phase, dtype=np.int8),
                np.array(units, dtype=np.float64),
                np.array(pairs, dtype=np.float64),
            )
        )

    def _end(self, idx: int, output_tokens: int | None, reason: str, base_s: float, out: TapOutput) -> None:
        req = self._live.pop(idx, None)
        if req is None:
            self.counts["unknown_end"] += 1
            return
        self._recent[idx] = req
        while len(self._recent) > _RECENT:
            self._recent.popitem(last=False)
        if output_tokens is None:  # aborted: the tokens sampled so far
            output_tokens = req.high - req.prompt + 1 if req.high >= req.prompt else 0
            self.counts["aborted"] += 1
        else:
            self.counts["finished"] += 1
        out.infos.append(
            RequestInfo(
                req.request_id,
                model=self.model,
                operation="chat" if req.raw.startswith("chatcmpl-") else "text_completion",
                start_s=req.arrival_s,
                end_s=req.end_s if req.end_s is not None else base_s,
                prompt_tokens=req.prompt,
                output_tokens=output_tokens,
                attributes={"vllm.request_id": req.raw, "finish_reason": reason},
            )
        )
