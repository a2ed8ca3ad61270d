"""The proxy process's own counters (requests by outcome, rejected fields), as the wire tap adds them up.

The proxy sends, in every datagram, its counters since it started, per process id. The wire
tap (:class:`~sidecar.taps.proxy_wire.ProxyWireReceiver`) exports their sum as
``jouletrace_tap="proxy"``: :class:`ProxyCounts` keeps each sender's last values and adds only
how far they moved to a running total, so the totals never go back (not when a sender is
forgotten), and a value that moves back, or up more than
:data:`~sidecar.taps.proxy_rows.MAX_COUNT_STEP` at once, is refused and counted
(``rejected_count_backwards``, ``rejected_count_jump``), not added.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sidecar.taps import validate as v
from sidecar.taps.proxy_rows import count_refusal, count_value, parse_counts

__all__ = ["ProxyCounts"]


class ProxyCounts:
    """Each sender's counters' last values, and what they moved, added up (``total``)."""

    def __init__(self, counts: Counter[str]) -> None:
        self.counts = counts  # the tap's own counters, for what is refused
        self.total: Counter[str] = Counter()
        self._marks: dict[int, dict[str, int]] = {}  # pid -> its counters' last values

    def forget(self, pid: int) -> None:
        """A sender no longer remembered: what it counted stays in the totals."""
        self._marks.pop(pid, None)

    def take(self, raw: Any, pid: int, seq: int, last_seqs: tuple[int | None, int | None]) -> None:
        """Add how far sender ``pid``'s counters (events since it started) moved to the totals.

        ``last_seqs``: its highest number before and after this datagram; only one that takes it
        forward counts (a late one's values are older). A sender heard first, or numbering anew,
        starts from zero at its datagram 0 (a new proxy); at a later one its values are only its
        base (it ran before this sidecar heard it, or was forgotten: counted then). A bad value
        leaves its counter as it was; a move that is no step is not added but becomes the base.
        """
        before, after = last_seqs
        if after == before:  # late, or another part of one number
            return
        restarted = before is None or after is None or after < before
        if restarted:
            self._marks.pop(pid, None)
        try:
            counts = parse_counts(raw)
        except v.Rejected as err:
            v.note(self.counts, err)
            return
        last = ({} if seq == 0 else None) if restarted else self._marks.get(pid)
        marks = self._marks[pid] = dict(last or {})  # None: no base yet, these values are it
        for name, value in counts.items():
            try:
                now = count_value(name, value)
            except v.Rejected as err:
                v.note(self.counts, err)
                continue
            before_n, marks[name] = marks.get(name, 0), now
            why = None if last is None else count_refusal(now, before_n)
            if why is not None:
                self.counts[f"rejected_{why}"] += 1
            else:
                self.total[name] += 0 if last is None else now - before_n
