"""From raw energy counters to the joules each device gained since the last poll.

* **Resets and wraps.** A counter that goes backwards either wrapped (the device has a
  ``wrap_j`` range, like RAPL) and gained ``raw + wrap_j - prev``, or was reset (driver reload,
  NVML) and gained ``raw`` since it restarted from zero. Either way energy never goes negative.
* **Bad reads.** A gain that is not a number, or more than the device's ``max_w`` could make
  since its counter last moved (at least ``PLAUSIBLE_WINDOW_S`` worth), is not energy: the read
  is counted (``implausible_reads``) and the counter kept at its last value, so a spike that
  comes back costs nothing and a read that went backwards and comes back is no reset; after
  ``REBASE_AFTER`` such reads in a row the counter is taken from where it now reads (it did
  move), its gain over those reads lost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from sidecar.meters.base import DeviceInfo

__all__ = ["PLAUSIBLE_WINDOW_S", "REBASE_AFTER", "CounterGains"]

log = logging.getLogger(__name__)

REBASE_AFTER = 3  # implausible reads in a row after which a device's counter is taken as it reads
PLAUSIBLE_WINDOW_S = 1.0  # the shortest window a gain is judged over (when it was made is uncertain)


class CounterGains:
    """The last counter kept per device, and what was counted on the way."""

    def __init__(self, devices: Sequence[DeviceInfo]) -> None:
        self.devices = tuple(devices)
        n = len(self.devices)
        self._last: np.ndarray | None = None
        self._max_w = np.array([d.max_w for d in self.devices], dtype=float)
        self._moved_t = np.zeros(n)  # when each device's counter last moved (from the first poll)
        self._bad_run = np.zeros(n, dtype=np.int64)  # implausible reads in a row per device
        self.resets = 0
        self.wraps = 0
        self.implausible_reads = 0  # device reads whose gain was not energy

    def gains(self, t: float, raw: np.ndarray) -> np.ndarray | None:
        """Joules per device since the last poll (``raw`` read at ``t``); None for the first poll,
        which is only a base."""
        last = self._last
        if last is None:
            self._last = raw
            self._moved_t[:] = t
            return None
        delta: np.ndarray = raw - last
        back = np.flatnonzero(delta < 0)
        for i in back:
            delta[i] = self._backwards_gain(int(i), float(last[i]), float(raw[i]))
        bad = self._judge(t, delta)
        if bad.any():
            self._keep_bad(t, raw, bad)
        else:
            self._last = raw
        self._moved_t[delta > 0] = t
        for i in back[~bad[back]]:  # a bad read that went backwards is no reset
            self._count_backwards(int(i), float(last[i]), float(raw[i]))
        return delta

    def _judge(self, t: float, delta: np.ndarray) -> np.ndarray:
        """Which gains are not energy (those set to 0); the runs of bad reads updated."""
        limit_j = self._max_w * np.maximum(t - self._moved_t, PLAUSIBLE_WINDOW_S)
        bad: np.ndarray = ~(np.isfinite(delta) & (delta <= limit_j))
        self._bad_run = np.where(bad, self._bad_run + 1, 0)
        delta[bad] = 0.0
        return bad

    def _keep_bad(self, t: float, raw: np.ndarray, bad: np.ndarray) -> None:
        """The last counters kept for the bad reads, or taken as read after ``REBASE_AFTER``."""
        assert self._last is not None
        self.implausible_reads += int(bad.sum())
        rebase = bad & (self._bad_run >= REBASE_AFTER) & np.isfinite(raw)
        for i in np.flatnonzero(bad):
            self._warn_bad(int(i), float(self._last[i]), float(raw[i]), bool(rebase[i]))
        kept = raw.copy()
        kept[bad & ~rebase] = self._last[bad & ~rebase]
        self._last = kept
        self._bad_run[rebase] = 0
        self._moved_t[rebase] = t

    def _warn_bad(self, i: int, last: float, raw: float, rebase: bool) -> None:
        if self._bad_run[i] == 1 or rebase:
            log.warning(
                "energy counter of %s read %r J after %r J: no device makes that; %s",
                self.devices[i].id, raw, last, "taking it as it reads" if rebase else "keeping the last",
            )  # fmt: skip

    def _wrapped(self, i: int, prev: float, raw: float) -> bool:
        wrap_j = self.devices[i].wrap_j
        return wrap_j is not None and prev - raw > 0.5 * wrap_j

    def _backwards_gain(self, i: int, prev: float, raw: float) -> float:
        wrap_j = self.devices[i].wrap_j
        if wrap_j is not None and self._wrapped(i, prev, raw):
            return raw + wrap_j - prev
        return max(raw, 0.0)

    def _count_backwards(self, i: int, prev: float, raw: float) -> None:
        if self._wrapped(i, prev, raw):
            self.wraps += 1
            return
        self.resets += 1
        log.warning(
            "energy counter of %s went backwards (%.3f J -> %.3f J): counting a reset",
            self.devices[i].id,
            prev,
            raw,
        )
