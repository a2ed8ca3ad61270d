"""When to read one device's energy counter: lock onto its update grid, read just after each update.

An NVML energy read costs ~3.3 ms of CPU on an H200 (docs/measurements/nvml.md)
and the counter only changes every 100 ms, on a grid of fixed phase. Polling
every 20 ms spends five reads per update; for eight GPUs read one after another
that is more than a core, and the pass (8 x 3.3 ms) no longer fits in the
period. :class:`PhaseLock` schedules the reads of one device instead:

* **search**: dithered reads every ``search_s`` until :class:`~sidecar.grid.GridClock`
  has fitted the grid (period and phase) to the change windows;
* **locked**: one read ``after_s`` past each predicted update, so each update
  costs one read. Every ``probe_every``-th planned read is preceded by a **probe**:
  one read up to ``spread_s`` before the predicted update (where a grid fitted
  late shows);
* **backed off**: while the counter is steady (the last ``steady_n`` per-update
  increments within ``steady_rel`` of each other) a locked device is read after
  every ``max_stride``-th update only. One read then sees ``max_stride`` updates;
  it is dated at the last of them, and the energy between two reads is split
  evenly over the updates in between (the timeline's linear interpolation), which
  is what a steady counter does. Any change in the increments goes back to one
  read per update. The trade: fewer reads for coarser energy ticks while steady.
  A backed-off read whose energy says it saw fewer updates than planned counts
  them so (once: then one read per update until the increments agree again);
* **chase**: a read that finds the predicted update not there yet looks again
  2, 4, 8 ... ms later (``max_chases`` times), so a late update is bracketed and a
  grid that moved shows as bounds no grid fits.

Every read brackets the updates: a read that saw the old value is a lower bound
of the next update, one that saw the new value an upper bound, whatever delayed
the read (a delay only loosens a bound, it never makes one wrong). The grid
``update_k = phase + k * period`` is the line that fits between the bounds of the
last ``fit_updates`` updates with the most room on both sides (found over a small
set of candidate periods around the current one); each update is dated at its
grid point. When no grid fits the bounds any more (a driver reload, a clock
step), the lock is dropped and the search starts again.

:attr:`PhaseLock.phase_error_s` (half the room the bounds leave the grid) says how
well the phase is locked: the self-metric. The class is clock-free: the caller
reads the device when :meth:`next_read_s` says (a due read of a locked device
before any search read) and reports each read with :meth:`observe`.
Units: seconds, joules.
"""

from __future__ import annotations

import math
import random
from collections import deque

import numpy as np

from sidecar.grid import GridClock

__all__ = ["PhaseLock"]

_PERIOD_STEPS = np.linspace(-1e-3, 1e-3, 81)  # relative period corrections tried at each refit


class PhaseLock:
    """The read schedule of one device's energy counter."""

    def __init__(
        self,
        *,
        search_s: float = 0.01,
        after_s: float = 0.002,
        probe_every: int = 4,
        spread_s: float = 0.006,
        chase_s: float = 0.002,
        max_chases: int = 5,
        fit_updates: int = 128,
        max_stride: int = 2,
        steady_rel: float = 0.05,
        steady_n: int = 5,
        seed: int | None = None,
    ) -> None:
        self.search_s, self.after_s, self.chase_s = search_s, after_s, chase_s
        self.probe_every, self.spread_s = probe_every, spread_s
        self.max_stride, self.steady_rel = max_stride, steady_rel
        self._seen: deque[tuple[int, float]] = deque(maxlen=steady_n + 1)  # (grid index, J) of dated reads
        self._planned = 0  # reads planned while locked (every probe_every-th gets a probe)
        self._short = False  # the last read saw fewer updates than it was planned for
        self._chases = 0  # reads since the last update that found it late
        self.max_chases = max_chases
        self._rng = random.Random(seed)
        self._grid = GridClock(min_windows=32)
        self._bounds: deque[tuple[int, float, float]] = deque(maxlen=fit_updates)  # (index, lo, hi)
        self._windows: deque[tuple[float, float]] = deque(maxlen=fit_updates)  # the search's (lo, hi)
        self._phase_s: float | None = None  # time of update 0
        self._period_s: float | None = None
        self._room_s: float | None = None  # room the bounds leave the grid on each side
        self._last: tuple[float, float] | None = None  # (sample time, value) of the previous read
        self._lower_s = -math.inf  # latest sample that saw the value before the coming update
        self._plan: list[float] = []  # start times of the reads planned for the coming update
        self._search_due_s: float | None = None  # the next search read, once drawn
        self.reads = 0
        self.updates = 0
        self.unlocks = 0
        self.short_reads = 0  # reads that, backed off, saw fewer updates than planned

    # ---- what the caller asks ----------------------------------------------------------
    @property
    def locked(self) -> bool:
        return self._phase_s is not None

    @property
    def period_s(self) -> float | None:
        """The fitted update period (s); None while searching."""
        return self._period_s if self.locked else None

    @property
    def stride(self) -> int:
        """Updates per planned read: ``max_stride`` while the counter is steady, else 1."""
        return 1 if self._steady_step_j() is None else self.max_stride

    def _steady_step_j(self) -> float | None:
        """The energy per update (J) while the last increments agree within ``steady_rel``, else None."""
        if not self.locked or len(self._seen) < (self._seen.maxlen or 0):
            return None
        (k0, e0), *rest = self._seen
        steps = []
        for k, e in rest:
            if k <= k0:
                return None
            steps.append((e - e0) / (k - k0))
            k0, e0 = k, e
        low, high = min(steps), max(steps)
        return float(np.median(steps)) if high - low <= self.steady_rel * abs(high) else None

    @property
    def phase_error_s(self) -> float | None:
        """Half the room the recent bounds leave the grid (s): the dating error is within it;
        negative when the bounds slightly disagree (update jitter). None while searching."""
        return self._room_s if self.locked else None

    def next_read_s(self) -> float:
        """When (start time, s) this device wants its next read."""
        if self._last is None:
            return -math.inf  # read now
        t_last = self._last[0]
        if not self.locked:
            if self._search_due_s is None:  # drawn once per read: asking again gives the same answer
                self._search_due_s = t_last + self.search_s * self._rng.uniform(0.75, 1.25)
            return self._search_due_s
        if not self._plan:
            self._plan = self._plan_update(t_last)
        return self._plan[0]

    def observe(self, start_s: float, end_s: float, energy_j: float) -> float | None:
        """A read started at ``start_s`` and returned at ``end_s``; the dated update time if it saw one."""
        self.reads += 1
        self._search_due_s = None
        t = 0.5 * (start_s + end_s)  # when the counter was sampled, as well as we can tell
        if self._plan:
            self._plan.pop(0)
        last, self._last = self._last, (t, energy_j)
        if last is None or energy_j == last[1]:
            self._lower_s = t
            if last is not None and self.locked and not self._plan and self._past_predicted(t):
                self._chases += 1
                if self._chases <= self.max_chases:  # the update is late: look again, 2, 4, 8 ... ms on
                    self._plan = [end_s + self.chase_s * 2 ** (self._chases - 1)]
            return None
        self.updates += 1
        self._chases = 0
        self._plan = []
        lo_s, self._lower_s = self._lower_s, -math.inf
        self._short = False
        dated = self._date(max(lo_s, last[0]), t, energy_j)
        if self._short:  # it saw fewer updates than planned: the last one is late, look again soon
            self.short_reads += 1
            self._plan = [end_s + self.chase_s]
        return dated

    def reset(self) -> None:
        """Drop the lock and search again (the caller could not read for a while)."""
        if self.locked:
            self._unlock()

    # ---- internals ---------------------------------------------------------------------------
    def _plan_update(self, t_last: float) -> list[float]:
        """Read start times for the first update after ``t_last``."""
        phase, period = self._phase_s, self._period_s
        assert phase is not None and period is not None
        k = math.floor((t_last - phase) / period) + 1
        self._planned += 1
        probe_now = self._planned % self.probe_every == 0
        if not probe_now:
            k += self.stride - 1  # back off while steady; a probe cycle reads the next update
        predicted = phase + k * period
        after = max(predicted + self.after_s, t_last)
        if not probe_now:
            return [after]
        probe = predicted - self._rng.uniform(0.0, self.spread_s)  # a grid fitted late shows here
        return [max(probe, t_last), after] if probe < after - 0.001 else [after]

    def _past_predicted(self, t: float) -> bool:
        phase, period = self._phase_s, self._period_s
        assert phase is not None and period is not None
        return (t - phase) % period < 0.5 * period  # past an update that has not shown yet

    def _date(self, lo_s: float, hi_s: float, energy_j: float) -> float:
        if not self.locked:
            dated = self._grid.date(lo_s, hi_s)
            self._windows.append((lo_s, hi_s))
            if self._grid.period_s is not None and self._grid.phase_s is not None:
                self._lock(self._grid.phase_s, self._grid.period_s)
            return dated
        phase, period = self._phase_s, self._period_s
        assert phase is not None and period is not None
        # The last update the read saw: reads come just after a predicted update (or late, up to
        # 3/4 period), probes shortly before one; one read may see several (back-off, failed reads).
        k = math.floor((hi_s - phase) / period + 0.25)
        if phase + k * period < lo_s - 0.5 * period:  # the grid has slipped: use the nearest point
            k = round((0.5 * (lo_s + hi_s) - phase) / period)
        k = self._count_by_energy(k, energy_j)
        self._bounds.append((k, lo_s, hi_s))
        self._refit()
        if self._room_s is not None and self._room_s < -0.005:  # no grid fits the bounds any more
            self._unlock()
            return 0.5 * (lo_s + hi_s)
        self._seen.append((k, energy_j))
        grid_t = self._phase_s + k * self._period_s  # type: ignore[operator]
        return min(max(grid_t, lo_s + 1e-6), hi_s)

    def _count_by_energy(self, k: int, energy_j: float) -> int:
        """While steady, a read meant to see several updates may have come just before the last
        one: the energy it saw says how many updates it holds."""
        step = self._steady_step_j()
        if step is None or step <= 0 or not self._seen:
            return k
        k_prev, e_prev = self._seen[-1]
        seen = round((energy_j - e_prev) / step)
        self._short = 1 <= seen < k - k_prev
        if not self._short:
            return k
        # A power drop reads the same; trust this count once: one read per update until the
        # increments agree again, numbered by time (a wrong count must not carry on).
        self._seen.clear()
        return k_prev + seen

    def _refit(self) -> None:
        """The grid with the most room between the bounds, over candidate periods near the current."""
        period = self._period_s
        assert period is not None
        k = np.array([b[0] for b in self._bounds], float)
        lo = np.array([b[1] for b in self._bounds])
        hi = np.array([b[2] for b in self._bounds])
        k_rel = k - k[-1]
        periods = period * (1.0 + _PERIOD_STEPS)  # candidates
        shifted_lo = lo[None, :] - periods[:, None] * k_rel[None, :]  # bounds of update k[-1]
        shifted_hi = hi[None, :] - periods[:, None] * k_rel[None, :]
        low, high = shifted_lo.max(axis=1), shifted_hi.min(axis=1)
        best = int(np.argmax(high - low))
        self._period_s = float(periods[best])
        self._phase_s = float(0.5 * (low[best] + high[best]) - self._period_s * k[-1])
        self._room_s = float(0.5 * (high[best] - low[best]))

    def _lock(self, phase_s: float, period_s: float) -> None:
        """Lock onto the search's grid, its (narrow) change windows the first bounds of the fit."""
        self._phase_s, self._period_s = phase_s, period_s
        for lo_s, hi_s in self._windows:
            self._bounds.append((round((0.5 * (lo_s + hi_s) - phase_s) / period_s), lo_s, hi_s))
        self._windows.clear()
        self._refit()

    def _unlock(self) -> None:
        self.unlocks += 1
        self._phase_s = self._period_s = self._room_s = None
        self._grid = GridClock(min_windows=32)
        self._bounds.clear()
        self._windows.clear()
        self._seen.clear()
        self._plan = []
