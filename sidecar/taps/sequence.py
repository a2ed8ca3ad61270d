"""Sequence numbers of one datagram stream -> lost, reordered, duplicate, jumps (bounded).

A sender numbers its datagrams 0, 1, 2, ... . The receiver learns from the
numbers what the network (or a hostile sender) did:

* a gap of ``k`` numbers counts ``k`` datagrams ``lost`` (a late one that then
  arrives counts ``reordered`` too, so true losses are ``lost - reordered``);
* the same datagram again (its number *and* its bytes, by a digest) within the last
  ``remember`` is a ``rejected_duplicate``: :meth:`SeqTracker.see` returns False and it must
  not be used again. Another datagram with a number already seen is used: the vLLM plugin
  sends a long message as several datagrams of one number, and a datagram forged with the
  sender's next number must not make the sender's own one a "duplicate" (it was dropped);
* a jump of more than ``window`` numbers, forward or back, is not a loss but a
  restart of the numbering (``seq_jumps``): the tracker takes the new number as
  its base, so one datagram with ``seq = 10**30`` adds 1 to a counter, not 1e30.

Counts go into the caller's ``Counter``, so they join the tap's other counters.
"""

from __future__ import annotations

from collections import Counter, deque

__all__ = ["SeqTracker"]


class SeqTracker:
    """The numbering of one stream; :meth:`reset` when the sender restarts."""

    def __init__(self, counts: Counter[str], *, window: int = 10_000, remember: int = 4096) -> None:
        self.counts = counts
        self.window = window
        self._last: int | None = None
        self._seen: dict[int, set[int]] = {}  # number -> the digests of the datagrams seen with it
        self._order: deque[tuple[int, int]] = deque()
        self._remember = remember
        self.skipped = 0  # numbers the last datagram seen skipped (lost before it; 0: none)

    def reset(self) -> None:
        """The sender restarted: the next number is taken as it comes."""
        self._last = None
        self._seen.clear()
        self._order.clear()

    @property
    def last(self) -> int | None:
        """The highest number taken since the last reset or jump (None: none yet)."""
        return self._last

    def seen(self, seq: int) -> bool:
        """Whether ``seq`` is among the numbers remembered (a datagram with it would be a duplicate)."""
        return seq in self._seen

    def see(self, seq: int, digest: int = 0) -> bool:
        """Account for datagram ``seq`` (``digest``: of its bytes, e.g. ``hash(data)``); False if it is
        a duplicate (drop it). :attr:`skipped` says how many numbers it skipped (datagrams lost)."""
        self.skipped = 0
        last = self._last
        digests = self._seen.get(seq)
        if digests is not None:
            if digest in digests:
                self.counts["rejected_duplicate"] += 1
                return False
            self._remember_seq(seq, digest)  # another part of one number: not a loss, nor reordered
            return True
        if last is None or abs(seq - last) > self.window:
            if last is not None:
                self.counts["seq_jumps"] += 1
                self._seen.clear()
                self._order.clear()
            self._last = seq
        elif seq > last:
            self.skipped = seq - last - 1
            self.counts["lost"] += self.skipped
            self._last = seq
        else:
            self.counts["reordered"] += 1
        self._remember_seq(seq, digest)
        return True

    def _remember_seq(self, seq: int, digest: int) -> None:
        self._seen.setdefault(seq, set()).add(digest)
        self._order.append((seq, digest))
        while len(self._order) > self._remember:
            old, old_digest = self._order.popleft()
            kept = self._seen[old]
            kept.discard(old_digest)
            if not kept:
                del self._seen[old]
