"""The scheduler hook's stream: engine steps in, datagrams (sidecar.contracts.scheduler_wire) out.

vLLM-free so it can be tested anywhere; :mod:`servers.vllm.scheduler_hook` feeds
it from inside vLLM's scheduler. Per step: :meth:`StepStream.scheduled` when a
batch is scheduled (members, scheduled tokens, tokens already in the KV cache),
:meth:`StepStream.ended` when its output is back, :meth:`StepStream.finished`
when a request leaves. A step runs from the later of its scheduling and the
previous step's end (with async scheduling the next batch is scheduled while
the previous one still runs) to its end.

Flushing: after a step ends, when the oldest unsent step is ``flush_s`` old
(default 20 ms: one datagram per step when steps are longer, a few steps per
datagram when they are shorter), when the engine has nothing left to do, and
at once when a request is new or finished: the sidecar then learns of it
before vLLM's front end (and so the stat-logger plugin) does, which is what
lets the sidecar's claims keep the plugin from counting the same work. The
next ``RENEW_SENDS`` messages carry each new row again (``renew``) while its
request is in flight: a datagram lost on the way no longer leaves the sidecar
without a request's id (it would take its steps under an ``unknown-`` name and
its span's work besides).
A finish is held until every step scheduled before it has ended and been
queued, so a receiver never sees a member's step after its ``fin``.

Encoding and sending run on vLLM's loop, at the flush: a sender thread was
tried and measured worse (``benchmarks/hook_overhead.py``): the loop then
waited for the GIL while the thread encoded, milliseconds per step. Never
blocks, never raises: a non-blocking socket, one ``sendto`` per datagram, send
errors dropped and counted (``dropped``). Stdlib + the wire module only.
Units: seconds, tokens.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sidecar.contracts.json_checks import MAX_AGO_S  # the decoder refuses a longer one
from sidecar.contracts.scheduler_wire import (
    MAX_CLIENT_ID_CHARS,
    MAX_ID_CHARS,
    PARALLEL_CHILD,
    RENEW_SENDS,
    FinRow,
    Message,
    NewRow,
    StepRow,
    split,
)
from sidecar.contracts.vllm_ids import normalize_request_id

__all__ = ["StepStream", "external_id"]

_SUFFIX = re.compile(r"-[0-9a-f]{8}$")  # vLLM 0.32 appends f"-{random_uuid():.8}" to the client's id
_MAX_PENDING_STEPS = 64  # flush at the latest after this many steps


def external_id(internal: str, randomized: bool = True) -> str:
    """vLLM's engine request id -> the id the front end knows (e.g. ``chatcmpl-<X-Request-Id>``), in
    the wire's bounds (:func:`wire_id`)."""
    return wire_id(_SUFFIX.sub("", internal) if randomized else internal)


def wire_id(request_id: str) -> str:
    """An id the sidecar takes as it is (printable, a client's id of 1..256 characters by the
    sidecar's own mapping, :func:`normalize_request_id`, and what vLLM adds to it: ``chatcmpl-``),
    else one that fits: its non-printable characters as ``?``, cut to 256 with ``~`` and 8 hex
    digits of a hash of the whole (a client's ``X-Request-Id`` can be any length: the sidecar
    refused the row and filed the request's steps under ``unknown-<pid>-<idx>``). Before: any id
    over 256 was cut, so ``chatcmpl-`` and a client's id of 248..256 went under a hash."""
    if 0 < len(request_id) <= MAX_ID_CHARS and request_id.isprintable():
        child = PARALLEL_CHILD.fullmatch(request_id)  # a child goes by its parent's id
        if len(normalize_request_id(child[1] if child else request_id)) <= MAX_CLIENT_ID_CHARS:
            return request_id
    digest = hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    shown = "".join(c if c.isprintable() else "?" for c in request_id[:247])
    return f"{shown}~{digest}"


class StepStream:
    """Buffers steps and finishes of one engine and sends them to the sidecar over UDP."""

    def __init__(
        self,
        model: str,
        addr: tuple[str, int],
        *,
        flush_s: float = 0.02,
        randomized_ids: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        send: Callable[[bytes], Any] | None = None,
    ) -> None:
        self.model = model
        self.addr = addr
        self.flush_s = flush_s
        self.randomized_ids = randomized_ids
        self.clock, self.wall = clock, wall
        self.pid = os.getpid()
        self.seq = 0
        self.sent = self.dropped = self.steps = self.unpaired = self.too_big = 0
        self.step_s = 0.0  # summed duration of the steps sent
        if send is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._sock: socket.socket | None = sock
            send = self._sendto
        else:
            self._sock = None
        self._send = send
        self._idx: dict[str, int] = {}  # engine request id -> wire idx
        self._req: dict[str, Any] = {}  # engine request id -> vLLM's Request (it outlives vLLM's table)
        self._next_idx = 0
        self._inflight: deque[tuple[object, float, list[int], list[int], list[int]]] = deque()
        self._last_end = -float("inf")
        self._n_scheduled = 0  # batches scheduled so far
        self._n_ended = 0  # batches ended so far
        self._new: list[tuple[int, str, int, float]] = []  # idx, external id, prompt, arrival (Unix s)
        # new rows sent, to send again (renew): idx -> (sends left, the row as in _new); in flight only
        self._renew: dict[int, tuple[int, tuple[int, str, int, float]]] = {}
        self._steps: list[tuple[float, float, list[int], list[int], list[int]]] = []
        self._fin: list[tuple[int, FinRow]] = []  # (scheduled batches it must wait for, row)
        self._gone: list[tuple[int, int]] = []
        self._first_pending: float | None = None

    def scheduled(
        self,
        key: object,
        t_s: float,
        members: list[str],
        scheduled: list[int],
        before: list[int],
        request: Callable[[str], Any],
    ) -> None:
        """A batch was scheduled at ``t_s``; ``request(id)`` gives vLLM's Request of a new member."""
        idx = list(map(self._idx.get, members))
        if None in idx:
            for i, value in enumerate(idx):
                if value is None:
                    idx[i] = self._admit(members[i], request(members[i]))
        self._inflight.append((key, t_s, idx, scheduled, before))  # type: ignore[arg-type]
        self._n_scheduled += 1

    def arrived(self, engine_id: str, req: Any) -> None:
        """vLLM took a request into its queue. A parallel-sampling child (``<i>_<parent id>``) is
        announced now, not at its first step: the sidecar ends the parent's record with its last
        child, and must know every child before one ends. vLLM's front end adds all ``n`` children
        at once, but a full batch can run one to its end before the next is first scheduled."""
        if engine_id not in self._idx and PARALLEL_CHILD.fullmatch(engine_id):
            self._admit(engine_id, req)

    def _admit(self, engine_id: str, req: Any) -> int:
        i = self._next_idx
        self._next_idx += 1
        self._idx[engine_id] = i
        self._req[engine_id] = req
        ext = external_id(engine_id, self.randomized_ids)
        self._new.append((i, ext, int(req.num_prompt_tokens), float(req.arrival_time)))
        return i

    def ended(self, key: object, t_s: float) -> tuple[float, int]:
        """The batch scheduled as ``key`` ended at ``t_s``; returns (its duration in s, its members)."""
        if all(k is not key for k, *_ in self._inflight):  # never scheduled here (its scheduled() failed):
            self.unpaired += 1  # the batches in flight stay (popping to find it emptied the queue,
            return 0.0, 0  # the one running too, and every later batch was unpaired as well)
        while self._inflight:
            k, t0, idx, scheduled, before = self._inflight.popleft()
            self._n_ended += 1
            if k is not key:
                self.unpaired += 1  # a batch that never came back (should not happen): skipped
                continue
            self._last_end, t0 = max(self._last_end, t_s), min(max(t0, self._last_end), t_s)
            if not idx:
                return 0.0, 0
            self._steps.append((t0, t_s, idx, scheduled, before))
            self.steps += 1
            self.step_s += t_s - t0
            if self._first_pending is None:
                self._first_pending = t_s
            return t_s - t0, len(idx)
        self.unpaired += 1
        return 0.0, 0

    def request(self, engine_id: str) -> Any:
        """vLLM's Request of a member still in flight here, else None."""
        return self._req.get(engine_id)

    def finished(self, engine_id: str, output_tokens: int, reason: str, aborted: bool) -> None:
        """A request left the engine (``aborted``: without finishing; a child announced on arrival
        may leave so before its first step)."""
        self._req.pop(engine_id, None)
        i = self._idx.pop(engine_id, None)
        if i is None:
            return  # never scheduled: nothing was sent about it
        self._renew.pop(i, None)  # never sent again after its end
        if aborted:
            self._gone.append((self._n_scheduled, i))
        else:
            self._fin.append((self._n_scheduled, FinRow(i, int(output_tokens), reason[:32])))
        if self._first_pending is None:
            self._first_pending = self.clock()

    def maybe_flush(self, idle: bool) -> None:
        """Send if the oldest unsent step is ``flush_s`` old, many are waiting, or the engine is idle."""
        first = self._first_pending
        if first is None and not self._new:
            return
        if (
            idle
            or self._new  # a request's first step: before the front end hears of it (claims)
            or (self._fin and self._fin[0][0] <= self._n_ended)
            or (self._gone and self._gone[0][0] <= self._n_ended)
            or len(self._steps) >= _MAX_PENDING_STEPS
            or (first is not None and self.clock() - first >= self.flush_s)
        ):
            self.flush()

    def flush(self) -> None:
        """Send everything that is ready now."""
        mono, wall = self.clock(), self.wall()
        ended = self._n_ended
        # requests that ended, sent now or held: a new row of one is not sent again (renew)
        ending = {r.idx for _, r in self._fin} | {i for _, i in self._gone} if self._new else set()
        fin = [row for n, row in self._fin if n <= ended]
        gone = [i for n, i in self._gone if n <= ended]
        self._fin = [(n, row) for n, row in self._fin if n > ended]
        self._gone = [(n, i) for n, i in self._gone if n > ended]
        new = [NewRow(i, ext, prompt, _ago(wall - arrival)) for i, ext, prompt, arrival in self._new]
        steps = [StepRow(_ago(mono - t0), _ago(mono - t1), i, k, p) for t0, t1, i, k, p in self._steps]
        self._first_pending = mono if (self._fin or self._gone) else None
        if not (new or steps or fin or gone):
            return
        renew = self._renewed(wall, ending)
        self._new, self._steps = [], []
        message = Message(self.pid, self.seq, wall, self.model, new, steps, fin, gone, renew)
        datagrams, too_big = split(message)
        self.too_big += too_big  # rows no datagram can hold (a step of thousands of members)
        for data in datagrams:
            self.seq += 1
            self._send(data)

    def _renewed(self, wall: float, ending: set[int]) -> tuple[NewRow, ...]:
        """The new rows to send again now; counts them down and takes this flush's new rows in (not
        one whose request ended before its row was first sent: in ``ending``)."""
        renew = tuple(
            NewRow(i, ext, p, _ago(wall - arrival)) for _, (i, ext, p, arrival) in self._renew.values()
        )
        self._renew = {i: (left - 1, row) for i, (left, row) in self._renew.items() if left > 1}
        self._renew.update((row[0], (RENEW_SENDS, row)) for row in self._new if row[0] not in ending)
        return renew

    def _sendto(self, data: bytes) -> None:
        try:
            self._sock.sendto(data, self.addr)  # type: ignore[union-attr]
            self.sent += 1
        except OSError:  # sidecar away (ECONNREFUSED), buffer full (EAGAIN): drop
            self.dropped += 1


def _ago(seconds: float) -> float:
    return round(min(max(seconds, 0.0), MAX_AGO_S), 6)
