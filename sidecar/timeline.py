"""Cumulative energy per device over time, from raw counter polls.

The meter hands raw counters; this module turns them into a monotone energy
timeline:

* **Gains.** What each device gained since the last poll, resets, wraps and bad reads
  handled (:mod:`sidecar.counter_gains`): energy never goes negative, and a read no device
  could make is counted, not added.
* **Update edges.** NVML's counter changes about every 100 ms while we poll
  every 20 ms, so most polls repeat the last value. An *edge* is a poll at
  which the summed counter changed; the update happened somewhere between the
  previous poll and this one. Counters update on a regular grid (measured on
  an H200: 100.0 ms, p10-p90 99-101 ms), so the edge is dated on that grid,
  fitted by least squares to the recent change windows (``GridClock``): with
  polls that do not beat with the grid (the poller dithers its period) this
  dates an update to about a millisecond instead of half a poll. Where the
  grid does not fit (start-up, irregular counters, a driver reload) the edge
  is dated at the window's midpoint. Edges are where energy is known exactly; attribution
  cuts time into ticks between consecutive edges. When the counter does not
  move for ``max_tick_s`` (no power, or a stalled counter) a *forced* edge
  with unchanged energy keeps ticks short.
* **Measured update period.** The median spacing of recent unforced edges.
* **Interpolation.** Energy at any time is linear between the edges around it.
* **Bad reads.** While a device's reads are in doubt it shows no energy; the gain that ends the
  doubt is spread over the edges made meanwhile, and sealing waits for it (``doubt_hold_s``,
  at most ``DOUBT_HOLD_S``).
* **A counter that stood still.** A gain read on time after a device's counter stood still for
  more than ``STOOD_UPDATES`` times its usual spacing of moves (its driver did not publish) was
  made over that time: it is spread over the edges made since the counter last moved, not put in
  the last update's tick (counted ``stood_still``), and sealing waits while a counter stands
  still, as for bad reads (``doubt_hold_s``, at most ``DOUBT_HOLD_S``).

Storage is a ring buffer of edges (``capacity``), so memory is bounded.
Units: seconds (sidecar monotonic clock) and joules.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from sidecar.counter_gains import CounterGains
from sidecar.grid import GridClock
from sidecar.meters.base import DeviceInfo, Reading

__all__ = ["DOUBT_HOLD_S", "STALL_UPDATES", "STOOD_UPDATES", "Timeline"]

log = logging.getLogger(__name__)

# a change window longer than this many update periods holds several updates (the read came late)
STALL_UPDATES = 1.5
# a counter that did not move for more than this many of its own usual spacings of moves (their running
# mean, once _GAPS_KEPT were seen), its reads on time, stood still
STOOD_UPDATES = 3.0
_GAPS_KEPT = 8
# the longest a device's bad reads hold sealing back (its energy meanwhile shows when they end)
DOUBT_HOLD_S = 30.0


class Timeline:
    """Edges of the summed energy counter of a set of devices, with per-device energy."""

    def __init__(
        self,
        devices: Sequence[DeviceInfo],
        *,
        capacity: int = 65536,
        max_tick_s: float = 1.0,
    ) -> None:
        if not devices:
            raise ValueError("a timeline needs at least one device")
        self.devices = tuple(devices)
        self.capacity = capacity
        self.max_tick_s = max_tick_s
        n = len(self.devices)
        self._t = np.zeros(capacity)  # edge times (s)
        self._e = np.zeros(capacity)  # summed energy at each edge (J since the first poll)
        self._e_dev = np.zeros((capacity, n))  # per-device energy at each edge (J)
        self._forced = np.zeros(capacity, dtype=bool)
        self._count = 0  # edges ever written; the ring holds the last `capacity`
        self.gains = CounterGains(self.devices)
        self._energy_dev = np.zeros(n)  # unwrapped cumulative energy per device (J)
        self._last_poll_t: float | None = None
        self.out_of_order = 0
        self.stalled_reads = 0  # polls that saw several counter updates at once (read late)
        self.stood_still = 0  # gains after a device's counter stood still, its reads on time
        self._moved_t = np.full(n, np.nan)  # per device: the last poll that saw its counter move
        self._moves = np.zeros(n, dtype=np.int64)  # per device: spacings of moves seen (not stands)
        self._mean_gap = np.zeros(n)  # per device: their running mean (s), a weight of 1/_GAPS_KEPT
        self._usual_gap = np.full(n, np.nan)  # the same once _GAPS_KEPT were seen (NaN: too few yet)
        self.polls = 0
        self.grid = GridClock()
        self._period_key: tuple[int, int] | None = None  # (edges, recent) the cached period is for
        self._period: float | None = None

    # ---- ingest -------------------------------------------------------------
    def add(self, reading: Reading) -> bool:
        """Add one poll; return True if it made an edge."""
        raw = np.asarray(reading.energy_j, dtype=float)
        if raw.shape != (len(self.devices),):
            raise ValueError(f"reading has {raw.size} devices, timeline has {len(self.devices)}")
        t = reading.t_s
        if self._last_poll_t is not None and t <= self._last_poll_t:
            self.out_of_order += 1
            return False
        self.polls += 1
        prev_t = self._last_poll_t
        self._last_poll_t = t
        delta = self.gains.gains(t, raw)
        if delta is None:  # the first poll is only a base: its update time is unknown
            return False
        if np.any(delta > 0):
            assert prev_t is not None
            edge_t = max(self._date(prev_t, t), self.last_edge_t + 1e-9)
            self._spread(delta, edge_t, self._stood_since(delta, prev_t, t))
            self._energy_dev += delta
            self._append(edge_t, forced=False)
            return True
        if self._count and t - self.last_edge_t >= self.max_tick_s:
            self._append(t, forced=True)
            return True
        return False

    def _stood_since(self, delta: np.ndarray, prev_t: float, t: float) -> np.ndarray:
        """Per device with a gain now: when its counter last moved, where that was more than
        ``STOOD_UPDATES`` of its usual spacings of moves before the poll before this one, whose read
        saw it standing still (NaN elsewhere, and while a device has moved fewer than
        ``_GAPS_KEPT`` times). Each device by its own spacing: devices read on schedules of their
        own (the phase-locked poller) are each read about once an update, or once in two."""
        moved = delta > 0
        stood = moved & (prev_t - self._moved_t > STOOD_UPDATES * self._usual_gap)  # NaN: False
        since = np.where(stood, self._moved_t, np.nan)
        if stood.any():
            self.stood_still += int(np.count_nonzero(stood))
        gap = t - self._moved_t
        keep = moved & ~stood & np.isfinite(gap)  # a stand is not a device's usual spacing
        self._mean_gap[keep] += (gap[keep] - self._mean_gap[keep]) / np.minimum(
            self._moves[keep] + 1, _GAPS_KEPT
        )
        self._moves[keep] += 1
        self._usual_gap = np.where(self._moves >= _GAPS_KEPT, self._mean_gap, np.nan)
        self._moved_t[moved] = t
        return since

    def _spread(self, delta: np.ndarray, edge_t: float, stood_since: np.ndarray) -> None:
        """A gain that ends a device's doubt (:meth:`CounterGains.doubt_since_s`) was made since the
        doubt began, one after its counter stood still since it last moved (``stood_since``):
        spread evenly over the edges made meanwhile (flat for that device), not dropped into the
        last tick. Edges the attributor sealed meanwhile keep what it took; the rest reaches the
        next tick it seals (see :meth:`doubt_hold_s`)."""
        since = np.fmin(self.gains.spread_since, stood_since)
        for i in np.flatnonzero(since < self.last_edge_t):
            idx = self._after(float(since[i]))
            share = float(delta[i]) * (self._t[idx] - since[i]) / (edge_t - since[i])
            self._e_dev[idx, i] += share
            self._e[idx] += share

    def doubt_hold_s(self, now_s: float) -> float | None:
        """Up to when ticks may be sealed while a device's reads are in doubt or its counter stands
        still (its energy since then not known yet); None when none is, or it has lasted
        ``DOUBT_HOLD_S`` (then sealing goes on, and what comes back later lands in the ticks not
        sealed yet)."""
        held = (self.gains.doubt_since_s(now_s, DOUBT_HOLD_S), self._standing_since(now_s))
        return min((since for since in held if since is not None), default=None)

    def _standing_since(self, now_s: float) -> float | None:
        """When the device standing still longest (more than ``STOOD_UPDATES`` of its usual spacings
        of moves, for no more than ``DOUBT_HOLD_S``) last moved; None: none is."""
        still_s = now_s - self._moved_t
        standing = (still_s > STOOD_UPDATES * self._usual_gap) & (still_s <= DOUBT_HOLD_S)
        return float(self._moved_t[standing].min()) if standing.any() else None

    def _date(self, prev_t: float, t: float) -> float:
        """When the change a poll at ``t`` saw (the poll before, at ``prev_t``, did not) happened.

        One update in the window: on the grid, else at its midpoint (:class:`GridClock`). A read that
        came late (the poll thread waited for a core) saw several: the whole change is dated at the
        last of them, so the one long tick it closes spreads it evenly over the window (at the
        midpoint, the tick before held all of it at twice the power, and the tick after none: the
        requests of the window's first half paid for its second half). Counted, ``stalled_reads``;
        such a window is kept out of the grid's fit."""
        period = self.grid.period_s or self.update_period_s()
        if period is None or t - prev_t <= STALL_UPDATES * period:
            return self.grid.date(prev_t, t)
        self.stalled_reads += 1
        last = self.grid.last_update(prev_t, t)
        return last if last is not None else t - 0.5 * period

    def _append(self, t: float, *, forced: bool) -> None:
        slot = self._count % self.capacity
        self._t[slot] = t
        self._e_dev[slot] = self._energy_dev
        self._e[slot] = float(self._energy_dev.sum())
        self._forced[slot] = forced
        self._count += 1

    # ---- queries ------------------------------------------------------------
    @property
    def resets(self) -> int:
        return self.gains.resets

    @property
    def wraps(self) -> int:
        return self.gains.wraps

    @property
    def implausible_reads(self) -> int:
        return self.gains.implausible_reads

    @property
    def edge_count(self) -> int:
        """Edges ever recorded (the ring holds the newest ``capacity``)."""
        return self._count

    @property
    def last_edge_t(self) -> float:
        return float(self._t[(self._count - 1) % self.capacity]) if self._count else float("-inf")

    @property
    def energy_j(self) -> np.ndarray:
        """Unwrapped energy per device since the first poll (J), as of the last poll.

        Ticks start at the first edge (the first poll's own update time is
        unknown), so energy before it counts here but is never attributed.
        """
        return self._energy_dev.copy()

    def _ordered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n, start = self._held()
        idx = (start + np.arange(n)) % self.capacity
        return self._t[idx], self._e[idx], self._e_dev[idx], self._forced[idx]

    def edges_after(self, t_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Edges with time > ``t_s``: (times s, summed energy J, per-device energy J).

        Found by binary search in the ring, and only those edges are copied: a tick
        asks for the one or two newest, whatever the ring holds.
        """
        idx = self._after(t_s)
        return self._t[idx], self._e[idx], self._e_dev[idx]

    def edge_times_after(self, t_s: float) -> np.ndarray:
        """The times (s) of the edges after ``t_s`` only (where the span handler cuts decode)."""
        times: np.ndarray = self._t[self._after(t_s)]
        return times

    def _held(self) -> tuple[int, int]:
        """(edges held, the oldest one's ring position)."""
        n = min(self._count, self.capacity)
        return n, (self._count - n) % self.capacity

    def _rank(self, t_s: float) -> tuple[int, int, int]:
        """(edges with time <= ``t_s``, edges held, the oldest one's ring position), by binary search."""
        n, start = self._held()
        head = self._t[start : start + n]  # the older part (all of it unless the ring wrapped)
        first = int(np.searchsorted(head, t_s, side="right"))
        if first == head.size and head.size < n:  # in the wrapped part
            first += int(np.searchsorted(self._t[: n - head.size], t_s, side="right"))
        return first, n, start

    def _after(self, t_s: float) -> np.ndarray:
        """Ring positions of the edges with time > ``t_s``, oldest first."""
        first, n, start = self._rank(t_s)
        idx: np.ndarray = (start + np.arange(first, n)) % self.capacity
        return idx

    def energy_at(self, t_s: float) -> float:
        """Summed energy at ``t_s`` (J), linear between edges; clamped to the known range. Two edges
        found by binary search (the whole ring was copied for each call, three times a query of
        the API's ``/v1/energy``, on its event loop)."""
        k, n, start = self._rank(t_s)
        if n == 0:
            return 0.0
        if k in (0, n):  # before the oldest edge or at/after the newest: clamped
            return float(self._e[(start + (0 if k == 0 else n - 1)) % self.capacity])
        a, b = (start + k - 1) % self.capacity, (start + k) % self.capacity
        t_a, t_b = float(self._t[a]), float(self._t[b])
        e_a, e_b = float(self._e[a]), float(self._e[b])
        return e_a + (e_b - e_a) * (t_s - t_a) / (t_b - t_a)

    def span_s(self) -> tuple[float, float] | None:
        """The oldest and newest edge times (s); None before any."""
        n, start = self._held()
        if n == 0:
            return None
        return float(self._t[start]), float(self._t[(start + n - 1) % self.capacity])

    def energy_between(self, t0_s: float, t1_s: float) -> float:
        """Energy of all devices over [t0_s, t1_s] (J), by interpolation between edges."""
        return self.energy_at(t1_s) - self.energy_at(t0_s)

    def update_period_s(self, recent: int = 64) -> float | None:
        """Median spacing of the last ``recent`` unforced edges (s); None before there are two.

        Computed once per new edge (records, snapshots and ticks ask for it often).
        """
        key = (self._count, recent)
        if self._period_key != key:
            n = min(self._count, self.capacity, 4 * recent)  # the newest edges hold the recent unforced ones
            idx = (np.arange(self._count - n, self._count)) % self.capacity
            t_real = self._t[idx][~self._forced[idx]][-recent:]
            if t_real.size >= 3:
                self._period = _median(np.diff(t_real))
            else:
                n_all = min(self._count, self.capacity)
                self._period = None if n_all <= n else self._period_all(recent)
            self._period_key = key
        return self._period

    def _period_all(self, recent: int) -> float | None:
        t, _, _, forced = self._ordered()
        t_real = t[~forced][-recent:]
        return _median(np.diff(t_real)) if t_real.size >= 3 else None


def _median(values: np.ndarray) -> float:
    """``np.median`` of a few values (the same number: the middle one, or the two middle ones'
    mean), without its general machinery: asked once per counter update, idle too."""
    n = values.size
    lo, hi = (n - 1) // 2, n // 2
    part = np.partition(values, (lo, hi))
    return float((part[lo] + part[hi]) / 2) if lo != hi else float(part[lo])
