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

from collections import deque

import numpy as np

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

    def _refit(self) -> None:
        mids = np.asarray(self._mids)
        if mids.size < self.min_windows:
            self._phase = self._period = None
            return
        spacing = float(np.median(np.diff(mids)))
        if spacing <= 0:
            self._phase = self._period = None
            return
        steps = np.round(np.diff(mids) / spacing)  # grid points between consecutive windows
        if np.any(steps < 1):  # two windows on one grid point: not a regular grid
            self._phase = self._period = None
            return
        j = np.concatenate([[0.0], np.cumsum(steps)])
        period, phase = np.polyfit(j, mids, 1)
        resid = mids - (phase + period * j)
        if float(np.max(np.abs(resid))) > 0.5 * period:
            self._phase = self._period = None
            return
        self._period, self._phase = float(period), float(phase)

    @property
    def phase_s(self) -> float | None:
        """The fitted time of grid point 0 (s), None while the grid is unknown."""
        return self._phase

    @property
    def period_s(self) -> float | None:
        """The fitted update period (s), None while the grid is unknown."""
        return self._period
