"""From raw energy counters to the joules each device gained since the last poll.

A read is taken at once when its gain over the device's last counter is a number from 0 to
what the device's ``max_w`` could make since its counter last moved (at least
``PLAUSIBLE_WINDOW_S`` worth), or when the counter wrapped (the device has a ``wrap_j`` range,
like RAPL: it gained ``raw + wrap_j - prev``). Any other read (not a number, a jump no device
makes, a counter that went backwards) is *suspect*: counted (``implausible_reads``), the
counter kept at its last value, no energy. So a spike or a drop that comes back costs nothing.

After ``REBASE_AFTER`` suspect reads in a row the counter is taken as it now reads:

* **a reset** (driver reload) when it went backwards from a counter that was seen to move:
  it gained ``raw`` since it restarted from zero, if that is plausible (counted ``resets``);
* otherwise **rebased**, its gain over the suspect reads lost; the counter it left is kept
  aside, so a garbage value that repeated (NVML's all-ones, read three times) costs nothing
  when the real counter comes back: its gain is taken against the counter kept aside.

The first read is only a base, and a base is *unproven* until the counter is seen to move from
it by a plausible gain: an unproven base that goes backwards is rebased, never a reset (a
garbage first read must not turn the real counter into a reset's worth of energy).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from sidecar.meters.base import DeviceInfo

__all__ = ["PLAUSIBLE_WINDOW_S", "REBASE_AFTER", "CounterGains"]

log = logging.getLogger(__name__)

REBASE_AFTER = 3  # suspect reads in a row after which a device's counter is taken as it reads
PLAUSIBLE_WINDOW_S = 1.0  # the shortest window a gain is judged over (when it was made is uncertain)


class CounterGains:
    """The counter kept per device, and what was counted on the way."""

    def __init__(self, devices: Sequence[DeviceInfo]) -> None:
        self.devices = tuple(devices)
        n = len(self.devices)
        self._last: np.ndarray | None = None
        self._max_w = np.array([d.max_w for d in self.devices], dtype=float)
        self._moved_t = np.zeros(n)  # when each device's counter last moved (from the first poll)
        self._proven = np.zeros(n, dtype=bool)  # seen to move from its base by a plausible gain
        self._run = np.zeros(n, dtype=np.int64)  # suspect reads in a row
        self._aside: list[tuple[float, float] | None] = [None] * n  # (counter, moved_t) before a rebase
        self.resets = 0
        self.wraps = 0
        self.implausible_reads = 0  # suspect reads (see the module docstring)

    def gains(self, t: float, raw: np.ndarray) -> np.ndarray | None:
        """Joules per device since the last poll (``raw`` read at ``t``); None for the first poll."""
        if self._last is None:
            self._last = raw.copy()
            self._moved_t[:] = t
            return None
        last = self._last
        delta: np.ndarray = raw - last
        fine = np.isfinite(delta) & (delta >= 0.0) & (delta <= self._limit_j(t, self._moved_t))
        moved = fine & (delta > 0.0)
        last[fine] = raw[fine]
        self._moved_t[moved] = t
        self._proven |= moved
        self._run[fine] = 0
        if any(self._aside):
            for i in np.flatnonzero(moved):
                self._aside[i] = None  # the new base is proven: nothing to come back to
        for i in np.flatnonzero(~fine):
            delta[i] = self._odd(int(i), t, float(raw[i]))
        return delta

    def _limit_j(self, t: float, moved_t: np.ndarray) -> np.ndarray:
        return self._max_w * np.maximum(t - moved_t, PLAUSIBLE_WINDOW_S)

    def _plausible(self, i: int, gain: float, since_t: float, t: float) -> bool:
        """``gain`` a number device ``i`` could make between ``since_t`` and ``t`` (the rule of
        :meth:`_limit_j`, for one device)."""
        return 0.0 <= gain <= float(self._max_w[i]) * max(t - since_t, PLAUSIBLE_WINDOW_S)

    def _take(self, i: int, t: float, raw: float, gain: float) -> float:
        assert self._last is not None
        self._last[i], self._moved_t[i], self._run[i], self._aside[i] = raw, t, 0, None
        self._proven[i] = True
        return gain

    def _odd(self, i: int, t: float, raw: float) -> float:
        """The gain of a read that is not plainly energy (0 unless it wrapped, came back to the
        counter kept aside, or ends a run as a reset)."""
        assert self._last is not None
        last = float(self._last[i])
        wrap_j = self.devices[i].wrap_j
        if wrap_j is not None and wrap_j > 0 and last - raw > 0.5 * wrap_j:
            gain = raw + wrap_j - last
            if self._plausible(i, gain, float(self._moved_t[i]), t):
                self.wraps += 1
                return self._take(i, t, raw, gain)
        aside = self._aside[i]
        if aside is not None and self._plausible(i, raw - aside[0], aside[1], t):
            return self._take(i, t, raw, raw - aside[0])  # the rebase was a garbage value's
        self.implausible_reads += 1
        self._run[i] += 1
        if self._run[i] == 1:
            log.warning(
                "energy counter of %s read %r J after %r J: not taken yet", self.devices[i].id, raw, last
            )
        if self._run[i] < REBASE_AFTER or not math.isfinite(raw):
            return 0.0
        return self._resolve(i, t, raw, last)

    def _resolve(self, i: int, t: float, raw: float, last: float) -> float:
        """A run of suspect reads ends: the counter taken as it reads, as a reset or rebased."""
        assert self._last is not None
        if raw < last and self._proven[i] and self._plausible(i, raw, float(self._moved_t[i]), t):
            self.resets += 1
            log.warning(
                "energy counter of %s went back (%.3f J -> %.3f J): a reset", self.devices[i].id, last, raw
            )
            return self._take(i, t, raw, raw)
        log.warning(
            "energy counter of %s taken as it reads (%r J after %r J), the gain lost",
            self.devices[i].id,
            raw,
            last,
        )
        if self._aside[i] is None and self._proven[i]:
            self._aside[i] = (last, float(self._moved_t[i]))
        self._last[i], self._moved_t[i], self._run[i] = raw, t, 0
        self._proven[i] = False
        return 0.0
