"""The engine processes one UDP tap hears, by process id, each with its own state.

The vLLM plugin and scheduler hook put their process id (``pid``) in every datagram. A new
pid used to mean "vLLM restarted": the old process's requests in flight ended as aborted at
once. But a second engine (data parallel) sending to the same port, or one well-formed
datagram forged with any pid, then ended every request in flight. Now each pid is a sender
with its own state (:class:`Senders`), and a sender ends (its requests in flight end as
aborted) only when it has gone quiet:

* **restart**: a new pid is heard, and an old sender has sent nothing for ``quiet_s`` before
  the new one's datagram was sent (a real restart: the old process died before the new one
  started; vLLM takes far longer than ``quiet_s`` to start) -> the old one ends at once,
  counted ``restarts``;
* **gone**: while other senders speak, a sender has sent nothing for ``quiet_s`` (an engine
  that died beside others, or a forged pid that said one thing) -> it ends at the next tick
  (:meth:`Senders.sweep`), counted ``senders_gone``;
* **cap**: a new pid while ``max_senders`` pids are heard, none of them quiet -> the new pid's
  datagram is refused (:class:`~sidecar.taps.validate.Rejected`, counted
  ``rejected_too_many_senders``): 16 datagrams forged with new pids within a millisecond ended
  the requests of the engine sending beside them (the one silent longest was ended to make room).
  A quiet one makes room by the restart rule above.

A sender alone that goes quiet is kept (its requests stay in flight until a new process is
heard, or time out), as before: an engine that is down is not yet known to be restarted.
A datagram's time is when it was sent, as the tap dates it (never after it was read). Quiet is
judged only on what was read, and the socket is read in order, so two things would make a
sending engine look quiet after the sidecar fell behind its socket (a stalled tick, a drain
whose budget ran out), with the engine's datagrams still waiting: a datagram dated after it was
read (a clock stepped back, or forged), taken as sent when read, judges the others as sent no
later than the last datagram heard from any sender (:meth:`Senders.judged_s`); and the sweep
ends no one after a drain that left datagrams waiting (``behind``). Units: seconds (the tap's
monotonic clock).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

from sidecar.taps import validate as v
from sidecar.taps.spans import TapOutput

__all__ = ["MAX_SENDERS", "QUIET_S", "Sender", "Senders"]

QUIET_S = 5.0  # a sender silent this long, while another speaks, has stopped (vLLM steps take ms)
MAX_SENDERS = 16


class Sender(Protocol):
    """What the table needs of a sender's state: when it last sent (monotonic s)."""

    heard_s: float


S = TypeVar("S", bound=Sender)


class Senders(Generic[S]):
    """The senders by pid; ``make(pid, sent_s)`` makes a new one's state, ``end(state, at_s, out)``
    ends one (its requests in flight end as aborted, their infos into ``out``)."""

    def __init__(
        self,
        make: Callable[[int, float], S],
        end: Callable[[S, float, TapOutput], None],
        counts: Counter[str],
        *,
        quiet_s: float = QUIET_S,
        max_senders: int = MAX_SENDERS,
    ) -> None:
        self._make, self._end = make, end
        self.counts = counts
        self.quiet_s = quiet_s
        self.max_senders = max_senders
        self._by_pid: dict[int, S] = {}
        # the start of the last tick that read the socket to its end: all sent before it was read
        # (inf until a sweep says so: a tap fed directly, as in tests, judges by the dates alone)
        self.drained_s = math.inf

    def __len__(self) -> int:
        return len(self._by_pid)

    def __iter__(self) -> Iterator[S]:
        return iter(list(self._by_pid.values()))

    def biggest(self, size: Callable[[S], int]) -> S | None:
        """The sender holding the most (by ``size``): where a cap over all senders evicts, so one
        flooding pid pays for its own flood, not the engine beside it."""
        return max(self._by_pid.values(), key=size, default=None)

    def get(self, pid: int) -> S | None:
        """The state of a pid already heard."""
        return self._by_pid.get(pid)

    def judged_s(self, sent_s: float, ahead_s: float) -> float:
        """When a datagram sent at ``sent_s`` counts as sent in judging other senders quiet: then; one
        that said it was sent ``ahead_s`` > 0 after it was read (taken as sent when read), no later
        than the last datagram heard from any sender (read after a stall, it made every sender
        whose datagrams still waited in the socket look quiet); and no later than the start of the
        last tick that read the socket to its end (:meth:`sweep`): a datagram dated just before it
        was read, read first after a stall, was the same (what another sender sent since that tick
        may still wait in the socket)."""
        if ahead_s > 0.0 and self._by_pid:
            sent_s = min(sent_s, max(s.heard_s for s in self._by_pid.values()))
        return min(sent_s, self.drained_s)

    def heard(self, pid: int, sent_s: float, out: TapOutput, judged_s: float | None = None) -> S:
        """The state of the sender of a datagram sent at ``sent_s``; a new pid first ends the senders
        quiet for ``quiet_s`` before it (by ``judged_s``, :meth:`judged_s`; default ``sent_s``: a
        restart). Raises :class:`~sidecar.taps.validate.Rejected` for a new pid beyond the cap."""
        state = self._by_pid.get(pid)
        if state is None:
            at_s = sent_s if judged_s is None else judged_s
            for old_pid, old in list(self._by_pid.items()):
                if at_s - old.heard_s >= self.quiet_s:
                    self._drop(old_pid, old, "restarts", sent_s, out)
            if len(self._by_pid) >= self.max_senders:  # every one heard within quiet_s: all sending
                raise v.Rejected(
                    "too_many_senders",
                    f"pid {pid}: {len(self._by_pid)} processes heard in the last {self.quiet_s:g} s "
                    "(the most kept); its datagram dropped",
                )
            state = self._by_pid[pid] = self._make(pid, sent_s)
        state.heard_s = max(state.heard_s, sent_s)
        return state

    def restart(self, pid: int, sent_s: float, out: TapOutput) -> S:
        """The same pid numbering from 0 again (a container restart keeps the pid): its old state ends
        and a new one begins."""
        old = self._by_pid.get(pid)
        if old is not None:
            self._drop(pid, old, "restarts", sent_s, out)
        state = self._by_pid[pid] = self._make(pid, sent_s)
        return state

    def sweep(self, now_s: float, out: TapOutput) -> None:
        """End the senders quiet for ``quiet_s`` while another spoke after them (one alone is kept);
        none after a drain that left datagrams waiting (``out.behind``: theirs may be among them).
        ``now_s``: when the tick began, before the socket was read."""
        if out.behind:
            return
        self.drained_s = now_s  # read to the end: whatever was sent before the tick began is heard
        if len(self._by_pid) < 2:
            return
        latest = max(s.heard_s for s in self._by_pid.values())
        for pid, state in list(self._by_pid.items()):
            if now_s - state.heard_s >= self.quiet_s and state.heard_s < latest:
                self._drop(pid, state, "senders_gone", now_s, out)

    def _drop(self, pid: int, state: S, reason: str, at_s: float, out: TapOutput) -> None:
        del self._by_pid[pid]
        self.counts[reason] += 1
        self._end(state, at_s, out)
