"""Date energy-counter updates on the counter's own regular grid.

A poll that sees a new counter value only says the update happened in
``(previous poll, this poll]``. Counters such as NVML's update on a regular
grid ``u_j = phase + j * period``; fitting that grid by least squares to the
midpoints of many recent windows averages their errors away (±10 ms each at a
20 ms poll; about 1 ms for the fit over 64 updates, provided the polls do not
beat with the grid). Each new window is then dated at its grid point when that
point lies inside the window, else at the window's midpoint. Units: seconds.
"""

from __future__ import annotations

import math
from collections import deque
from itertools import accumulate, pairwise

__all__ = ["GridClock"]


class GridClock:
    """Least-squares grid over recent update windows."""

    def __init__(self, recent: int = 64, min_windows: int = 16, slack_s: float = 0.002) -> None:
        self.recent = recent
        self.min_windows = min_windows
        self.slack_s = slack_s  # how far outside a window a grid point may fall (update jitter)
        self._mids: deque[float] = deque(maxlen=recent)
        self._phase: float | None = None
        self._period: float | None = None
        self.on_grid = 0  # windows dated on the grid
        self.off_grid = 0  # windows dated at their midpoint

    def date(self, lo_s: float, hi_s: float) -> float:
        """The estimated update time inside the change window ``(lo_s, hi_s]``."""
        mid = 0.5 * (lo_s + hi_s)
        self._mids.append(mid)
        self._refit()
        if self._phase is None or self._period is None:
            self.off_grid += 1
            return mid
        j = round((mid - self._phase) / self._period)
        g = self._phase + j * self._period
        if lo_s - self.slack_s <= g <= hi_s + self.slack_s:
            self.on_grid += 1
            # inside (lo, hi]: the poll at lo still read the old value, so never date it there
            return min(max(g, lo_s + 1e-6), hi_s)
        self.off_grid += 1
        return mid

    def last_update(self, lo_s: float, hi_s: float) -> float | None:
        """The last grid point in the window ``(lo_s, hi_s]`` (a read that came late saw several
        updates: the last is the window's end, as far as the counter knows); None while the grid is
        unknown or has no point there. A grid point within ``slack_s`` of ``hi_s`` may or may not
        have been seen: the one before is taken. Dated one update early, the long tick holds one
        update's energy too many over its n updates; dated at ``hi_s`` for an update that came
        after, the next tick would hold a whole update's energy in a millisecond."""
        if self._phase is None or self._period is None:
            return None
        g = self._phase + math.floor((hi_s - self.slack_s - self._phase) / self._period) * self._period
        return g if g > lo_s else None

    def _refit(self) -> None:
        # plain Python over at most ``recent`` floats: numpy's median and polyfit cost ~10x more
        # on 64 values, and this runs at every counter update (idle too)
        mids = list(self._mids)
        if len(mids) < max(self.min_windows, 2):
            self._phase = self._period = None
            return
        diffs = [b - a for a, b in pairwise(mids)]
        spacing = _median(diffs)
        if not spacing > 0:
            self._phase = self._period = None
            return
        steps = [round(d / spacing) for d in diffs]  # grid points between consecutive windows
        if min(steps) < 1:  # two windows on one grid point: not a regular grid
            self._phase = self._period = None
            return
        j = [0.0, *map(float, accumulate(steps))]
        period, phase = _line(j, mids)
        if max(abs(y - (phase + period * x)) for x, y in zip(j, mids, strict=True)) > 0.5 * period:
            self._phase = self._period = None
            return
        self._period, self._phase = period, phase

    @property
    def phase_s(self) -> float | None:
        """The fitted time of grid point 0 (s), None while the grid is unknown."""
        return self._phase

    @property
    def period_s(self) -> float | None:
        """The fitted update period (s), None while the grid is unknown."""
        return self._period


def _median(values: list[float]) -> float:
    """The median (the mean of the two middle values for an even count, as numpy's)."""
    ordered = sorted(values)
    half = len(ordered) // 2
    return ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2


def _line(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept of ``y = intercept + slope * x`` (centered sums)."""
    n = len(x)
    x_mean, y_mean = sum(x) / n, sum(y) / n
    sxx = sum((xi - x_mean) ** 2 for xi in x)
    sxy = sum((xi - x_mean) * (yi - y_mean) for xi, yi in zip(x, y, strict=True))
    slope = sxy / sxx
    return slope, y_mean - slope * x_mean
