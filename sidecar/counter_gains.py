"""From raw energy counters to the joules each device gained since the last poll.

A read is taken at once when its gain over the device's counter is a number from 0 to what
the device's ``max_w`` could make since its counter last moved (at least
``PLAUSIBLE_WINDOW_S`` worth). Any other read (not a number, a jump no device makes, a counter
that went backwards) is *suspect*: counted (``implausible_reads``), the counter kept at its
last value, no energy. So a spike or a drop that comes back costs nothing: the next good read
gains what the counter made meanwhile.

Suspect reads that agree with each other (each a plausible gain on the one before; a number)
form a *run*; a read that does not agree starts a new one, so garbage values, NaN bursts and a
lone backwards read never add up to anything. A run is taken as the counter:

* **a wrap** after 2 reads, when the device has a ``wrap_j`` range (RAPL) and the run's first
  read is a plausible wrap (``raw + wrap_j - prev``); the held first read is not counted as
  suspect then. One transient zero near the wrap boundary is no wrap: the next read disagrees.
* **a reset** (driver reload) after ``REBASE_AFTER`` reads, when it went backwards from a
  counter seen to move and reads no more than the device could make since that counter was
  last read (no floor: the restart came after that read): it owes ``raw``, the energy since the
  restart, paid once the new counter has moved ``REBASE_AFTER`` times (counted ``resets``);
* otherwise **rebased** after ``REBASE_AFTER`` reads, its gain lost.

A counter taken by a reset or a rebase is in doubt, unproven, until it moves: its reads that do
not move are suspect (counted), and the energy that shows when it moves is spread over the time
since the device last showed energy.

A counter left by a reset or a rebase is *kept aside* (:class:`~sidecar.counter_track.Track`),
with what was credited since and what it owes. A later read whose gain on it (less that credit)
is plausible and smaller than its gain on the current counter is the old counter come back (a
stale value, a garbage value repeated, a stretch of zeros taken as a reset): its gain is taken
against the counter kept aside, so nothing is counted twice, and what it owed is owed again. Only
a counter worth keeping replaces the one kept aside: one that moved ``REBASE_AFTER`` times, or a
reset's counter that moved (a stale value that moved once must not push the real counter out).
The counter kept aside is dropped when a reset's counter is paid, and once it is ``ASIDE_KEEP_S``
old while the current counter has moved ``REBASE_AFTER`` times: the old one will not come back, and
the window its return is judged over (10 kW x its age) must not grow without bound (a garbage
first read kept aside made one stale read an hour later a 36 MJ "return"). A reset's counter kept
aside that moved is paid what it owes when a later reset is paid (two reloads in a row).

The first read is only a base, *unproven* until the counter is seen to move from it: an unproven
counter that goes backwards is never a reset (a garbage first read must not turn the real counter
into a reset's worth of energy).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sidecar.counter_track import Track
from sidecar.meters.base import DeviceInfo

__all__ = ["ASIDE_KEEP_S", "PLAUSIBLE_WINDOW_S", "REBASE_AFTER", "WRAP_AFTER", "CounterGains"]

log = logging.getLogger(__name__)

REBASE_AFTER = 3  # agreeing suspect reads after which a device's counter is taken as it reads
WRAP_AFTER = 2  # agreeing reads after which a wrap is taken
PLAUSIBLE_WINDOW_S = 1.0  # the shortest window a gain is judged over (when it was made is uncertain)
ASIDE_KEEP_S = 30.0  # a counter kept aside is dropped once this old while the counter moves (moved 3 times)


@dataclass(slots=True)
class _Run:
    """Suspect reads in a row that agree with each other."""

    raw: float  # the newest read
    moved_t: float  # when the run's value last moved
    n: int
    wrap: bool  # its first read may be a wrap: held, counted as suspect only if the run is none


class CounterGains:
    """The counters kept per device, and what was counted on the way."""

    def __init__(self, devices: Sequence[DeviceInfo]) -> None:
        self.devices = tuple(devices)
        n = len(self.devices)
        self._started = False
        self._max_w = np.array([d.max_w for d in self.devices], dtype=float)
        self._now = Track.empty(n)  # the counter reads are taken against
        self._aside = Track.empty(n)  # one left by a reset or a rebase, in case it comes back
        self._credited = np.zeros(n)  # J gained since the counter was put aside
        self._rebased = np.zeros(n, dtype=bool)  # taken as it read (a reset or a rebase), not moved since
        self._runs: list[_Run | None] = [None] * n
        self._warned = np.zeros(n, dtype=bool)  # in a stretch of suspect reads (logged once)
        self._no_spread = np.full(n, math.nan)
        self.spread_since = self._no_spread  # per device: the last gain ended a doubt begun then
        self._calm = True  # no device in doubt, none with a counter aside, a reset owed or a run
        self.resets = 0
        self.wraps = 0
        self.implausible_reads = 0  # suspect reads (see the module docstring)

    def gains(self, t: float, raw: np.ndarray) -> np.ndarray | None:
        """Joules per device since the last poll (``raw`` read at ``t``); None for the first poll."""
        now = self._now
        if not self._started:
            self._started = True
            now.value[:], now.moved_t[:], now.seen_t[:] = raw, t, t
            return None
        delta: np.ndarray = raw - now.value
        fine = np.isfinite(delta) & (delta >= 0.0) & (delta <= self._limit_j(t, now.moved_t))
        if self._calm and fine.all():  # every read plainly energy, nothing in doubt: the common case
            moved = delta > 0.0
            np.copyto(now.value, raw)
            now.seen_t[:] = t
            now.moved_t[moved] = t
            now.proven |= moved
            self.spread_since = self._no_spread
            return delta
        gain = self._odd_gains(t, raw, delta, fine)
        self._calm = not (
            self._rebased.any() or self._warned.any() or now.reset.any() or any(self._runs)
        ) and bool(np.isnan(self._aside.value).all())
        return gain

    def _odd_gains(self, t: float, raw: np.ndarray, delta: np.ndarray, fine: np.ndarray) -> np.ndarray:
        """:meth:`gains` where a read is suspect, or a device in doubt or with a counter aside."""
        aside = self._aside
        back = raw - aside.value - self._credited  # the gain on a counter kept aside (NaN: none)
        home = np.isfinite(back) & (back >= 0.0) & (back <= self._limit_j(t, aside.moved_t))
        home &= ~fine | (back < delta)
        fine &= ~home
        gain: np.ndarray = np.where(home, back, np.where(fine, delta, 0.0))
        doubt = self._doubt()
        self.spread_since = np.where(
            doubt & (gain > 0.0), np.where(home, aside.moved_t, self._now.moved_t), math.nan
        )
        self.implausible_reads += int(np.count_nonzero(fine & (delta == 0.0) & self._rebased))
        if home.any():  # the counter kept aside came back, with what it owes
            self._now.copy_from(aside, home)
            self._rebased[home] = False
            aside.value[home] = math.nan
        self._take_all(t, raw, fine | home, gain)
        for i in np.flatnonzero(~(fine | home)):
            moved_t = float(self._now.moved_t[i])
            gain[i] = self._suspect(int(i), t, float(raw[i]))
            if gain[i] > 0.0 and doubt[i]:  # a wrap after suspect reads: made since the counter last moved
                self.spread_since[i] = moved_t
        gone = (self._now.moves >= REBASE_AFTER) & (t - aside.moved_t > ASIDE_KEEP_S)
        aside.value[gone] = math.nan  # the counter moves, the one kept aside will not come back
        return gain

    def _doubt(self) -> np.ndarray:
        """Devices whose reads are suspect now, whose counter was taken as it read and has not
        moved since, or whose reset's energy is not paid yet: the energy they make meanwhile shows
        when their counter is back (or the reset is paid)."""
        doubt: np.ndarray = self._warned | self._rebased | (self._now.reset & (self._now.owed > 0.0))
        return doubt

    def doubt_since_s(self, now_s: float, hold_s: float) -> float | None:
        """Since when the device longest in doubt, for no more than ``hold_s``, has shown no energy
        (None: none is): a gain that ends the doubt was made over that time, not at the read that
        shows it. A device in doubt for longer holds nothing, nor hides another's doubt."""
        doubt = self._doubt()
        if not doubt.any():
            return None
        moved_t = self._now.moved_t
        aside = (self._rebased | self._now.reset) & ~np.isnan(self._aside.value)  # from one kept aside
        since = np.where(aside, np.fmin(moved_t, self._aside.moved_t), moved_t)
        recent = since[doubt & (now_s - since <= hold_s)]
        return float(recent.min()) if recent.size else None

    def _take_all(self, t: float, raw: np.ndarray, taken: np.ndarray, gain: np.ndarray) -> None:
        now = self._now
        moved = taken & (gain > 0.0)
        now.moves[moved] += 1
        if now.reset.any():
            self._settle(moved, gain)
        now.value[taken] = raw[taken]
        now.seen_t[taken] = t
        now.moved_t[moved] = t
        now.proven |= moved
        self._rebased &= ~moved
        self._credited[taken] += gain[taken]
        self._warned[taken] = False
        if any(self._runs):
            for i in np.flatnonzero(taken):
                self._drop_run(int(i))

    def _settle(self, moved: np.ndarray, gain: np.ndarray) -> None:
        """Pay a reset's energy since the restart once its new counter moved ``REBASE_AFTER`` times
        (a stale value read a few times looks like a reset of a young counter, then the real
        counter comes back: held, nothing was invented)."""
        now, aside = self._now, self._aside
        due = now.reset & moved & (now.moves >= REBASE_AFTER)
        gain[due] += now.owed[due]
        self.spread_since[due] = np.fmin(aside.moved_t[due], now.moved_t[due])  # made since the restart
        chained = due & aside.reset & aside.proven & ~np.isnan(aside.value)
        gain[chained] += aside.owed[chained]  # a reset before it, whose counter moved: a real one too
        now.owed[due], now.reset[due] = 0.0, False
        aside.value[due] = math.nan  # the reset is one: the old counter will not come back

    def _limit_j(self, t: float, moved_t: np.ndarray) -> np.ndarray:
        return self._max_w * np.maximum(t - moved_t, PLAUSIBLE_WINDOW_S)

    def _plausible(
        self, i: int, gain: float, since_t: float, t: float, floor_s: float = PLAUSIBLE_WINDOW_S
    ) -> bool:
        """``gain`` a number device ``i`` could make between ``since_t`` and ``t`` (the rule of
        :meth:`_limit_j`, for one device, with the window's floor given)."""
        return 0.0 <= gain <= float(self._max_w[i]) * max(t - since_t, floor_s)

    def _drop_run(self, i: int) -> None:
        run = self._runs[i]
        if run is not None and run.wrap:
            self.implausible_reads += 1  # its held first read was no wrap
        self._runs[i] = None

    def _suspect(self, i: int, t: float, raw: float) -> float:
        """A read that is not plainly energy: 0, unless it completes a run taken as the counter."""
        if not self._warned[i]:
            self._warned[i] = True
            log.warning(
                "energy counter of %s read %r J after %r J: not taken",
                self.devices[i].id,
                raw,
                self._last_j(i),
            )
        run = self._runs[i]
        wrap_j = self.devices[i].wrap_j
        if not (0.0 <= raw < (wrap_j or math.inf)):  # no counter reads that: never taken as one
            self._drop_run(i)
            self.implausible_reads += 1
            return 0.0
        if run is not None and self._plausible(i, raw - run.raw, run.moved_t, t):
            run.moved_t = t if raw > run.raw else run.moved_t
            run.raw, run.n = raw, run.n + 1
        else:
            self._drop_run(i)
            run = self._runs[i] = _Run(raw, t, 1, self._wrap_gain(i, t, raw) is not None)
        if run.wrap and run.n >= WRAP_AFTER:
            gain = self._wrap_gain(i, t, raw)
            if gain is not None:
                self.wraps += 1
                return self._take_wrap(i, t, raw, gain)
            run.wrap = False
            self.implausible_reads += 1  # the held first read
        if not run.wrap:
            self.implausible_reads += 1
            if run.n >= REBASE_AFTER:
                return self._resolve(i, t, raw)
        return 0.0

    def _last_j(self, i: int) -> float:
        return float(self._now.value[i])

    def _wrap_gain(self, i: int, t: float, raw: float) -> float | None:
        """The gain if ``raw`` is the counter after a wrap (None if it cannot be)."""
        wrap_j, last = self.devices[i].wrap_j, self._last_j(i)
        if wrap_j is None or wrap_j <= 0 or last - raw <= 0.5 * wrap_j:
            return None
        gain = raw + wrap_j - last  # made since the last read (no floor: RAPL counts every ms)
        return gain if self._plausible(i, gain, float(self._now.seen_t[i]), t, floor_s=0.0) else None

    def _take_wrap(self, i: int, t: float, raw: float, gain: float) -> float:
        now = self._now
        now.value[i], now.moved_t[i], now.seen_t[i] = raw, t, t
        now.proven[i], self._rebased[i], self._warned[i] = True, False, False
        now.moves[i] += 1
        self._credited[i] += gain
        self._runs[i] = None
        return gain

    def _resolve(self, i: int, t: float, raw: float) -> float:
        """A run of ``REBASE_AFTER`` agreeing reads: the counter taken as it reads, as a reset
        (from the counter if it moved, else from the one kept aside if that had) or rebased."""
        now, aside = self._now, self._aside
        ref_j, ref_seen_t, credit_j = math.nan, 0.0, 0.0
        if now.proven[i]:
            ref_j, ref_seen_t = float(now.value[i]), float(now.seen_t[i])
        elif aside.proven[i] and not math.isnan(aside.value[i]):
            ref_j, ref_seen_t = float(aside.value[i]), float(aside.seen_t[i])
            credit_j = float(self._credited[i])
        reset = raw < ref_j and self._plausible(i, raw, ref_seen_t, t, floor_s=0.0)
        if reset:
            self.resets += 1
            log.warning(
                "energy counter of %s went back (%.3f J -> %.3f J): a reset", self.devices[i].id, ref_j, raw
            )
        else:
            log.warning(
                "energy counter of %s taken as it reads (%r J after %r J), the gain lost",
                self.devices[i].id,
                raw,
                self._last_j(i),
            )
        if self._keeps(i):
            aside.copy_from(now, i)
            self._credited[i] = 0.0
        now.start(i, t, raw, reset=reset, owed_j=max(raw - credit_j, 0.0) if reset else 0.0)
        self._rebased[i], self._runs[i] = True, None
        return 0.0

    def _keeps(self, i: int) -> bool:
        """Whether device ``i``'s counter is put aside when a run replaces it: when nothing is kept
        aside, or when it is worth more than what is (it moved ``REBASE_AFTER`` times, or it is a
        reset's counter that moved). A stale value that moved once must not push the real counter
        out; what it was credited stays in the credit of the counter kept aside."""
        now = self._now
        if math.isnan(self._aside.value[i]):
            return True
        return bool(now.proven[i] and (now.moves[i] >= REBASE_AFTER or now.reset[i]))
