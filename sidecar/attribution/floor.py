"""The idle power floor, measured from idle ticks instead of fitted.

The floor is what the GPUs draw with nothing to do (with the server's CUDA
context loaded): a property of the hardware that changes slowly (clocks,
temperature, a neighbour). It can be *observed*: every tick with no work in
flight is a sample of it (its measured energy / its duration). The fitted
model then takes the floor as given and fits only the work coefficients. Fitting
the floor too is not identifiable on a saturated server: when every tick is
busy, tick length is fixed and steps per tick follow tokens per tick, so the
floor, the per-step and the per-token costs trade off freely (see
docs/attribution.md, "Why the floor is measured").

The estimate is a weighted median of recent idle-tick powers (robust to a
tail of post-burst ticks at raised clocks), weights halving every
``halflife_s``. It is persisted (:meth:`FloorEstimate.state`) and restored
after a restart as a prior worth ``prior_ticks`` observations, so a sidecar
that restarts under load keeps a measured floor. ``override_w`` (a knob) wins
over everything. The estimate says where it came from and how old it is:
``source`` is ``override``, ``measured``, ``restored`` or ``none``; it is
``stale`` when the last idle observation is older than ``stale_after_s``.
Units: W, s (sidecar monotonic clock; Unix seconds only in the saved state).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["FloorEstimate", "FloorReading", "FloorState"]

_MIN_TICK_S = 0.02  # shorter idle ticks are too coarse a sample (counter resolution)


@dataclass(frozen=True, slots=True)
class FloorReading:
    """The floor as the fit uses it: value, where it came from, age, staleness."""

    power_w: float | None  # None: never observed and no override
    source: str  # override, measured, restored, none
    age_s: float | None  # since the newest idle observation (None: never)
    stale: bool
    samples: int


@dataclass(frozen=True, slots=True)
class FloorState:
    """What is persisted across restarts (Unix time, so it survives a new monotonic clock)."""

    devices: str  # the device ids it was measured on, comma-joined
    power_w: float
    observed_unix_s: float
    samples: int


class FloorEstimate:
    """A long-lived, robust estimate of the devices' idle power floor (sum over devices)."""

    def __init__(
        self,
        devices: str = "",
        *,
        override_w: float | None = None,
        halflife_s: float = 6 * 3600.0,
        stale_after_s: float = 3600.0,
        window: int = 4096,
        prior_ticks: int = 50,
    ) -> None:
        self.devices = devices
        self.override_w = override_w
        self.halflife_s = halflife_s
        self.stale_after_s = stale_after_s
        self.prior_ticks = prior_ticks
        self._t: deque[float] = deque(maxlen=window)
        self._w: deque[float] = deque(maxlen=window)
        self._dur: deque[float] = deque(maxlen=window)
        self._measured = 0  # idle ticks observed by this process
        self._cached: tuple[float, float] | None = None  # (as of t_s, power_w)

    def observe_idle(self, t_s: float, duration_s: float, energy_j: float) -> None:
        """One idle tick ending at ``t_s``: ``energy_j`` over ``duration_s``."""
        if not (duration_s >= _MIN_TICK_S and math.isfinite(energy_j) and energy_j >= 0):
            return
        self._t.append(t_s)
        self._w.append(energy_j / duration_s)
        self._dur.append(duration_s)
        self._measured += 1
        self._cached = None

    def restore(self, state: FloorState, now_s: float, now_unix_s: float) -> bool:
        """Seed the estimate from a saved state of the same devices; False if it does not apply."""
        if state.devices != self.devices or not (math.isfinite(state.power_w) and state.power_w >= 0):
            return False
        t_s = now_s - max(now_unix_s - state.observed_unix_s, 0.0)
        for _ in range(min(self.prior_ticks, max(state.samples, 1))):
            self._t.appendleft(t_s)
            self._w.appendleft(state.power_w)
            self._dur.appendleft(0.1)
        self._cached = None
        return True

    def power_w(self, now_s: float) -> float | None:
        """The floor (W) as of ``now_s``; None if never observed and not overridden."""
        return self.override_w if self.override_w is not None else self._measured_w(now_s)

    def _measured_w(self, now_s: float) -> float | None:
        if not self._w:
            return None
        if self._cached is not None and abs(self._cached[0] - now_s) < 60.0:
            return self._cached[1]  # the weights move on a scale of hours
        t = np.fromiter(self._t, float, len(self._t))
        w = np.fromiter(self._w, float, len(self._w))
        weight = np.fromiter(self._dur, float, len(self._dur)) * np.exp2(-(now_s - t) / self.halflife_s)
        value = _weighted_median(w, weight)
        self._cached = (now_s, value)
        return value

    def reading(self, now_s: float) -> FloorReading:
        """The floor with its provenance, for records, the snapshot and the self-metrics."""
        power = self.power_w(now_s)
        age = now_s - self._t[-1] if self._t else None
        if self.override_w is not None:
            source = "override"
        elif not self._t:
            source = "none"
        else:
            source = "measured" if self._measured else "restored"
        stale = source != "override" and (age is None or age > self.stale_after_s)
        return FloorReading(power, source, age, stale, len(self._t))

    def state(self, now_s: float, now_unix_s: float) -> FloorState | None:
        """What to persist: the measured estimate (never the override); None before any."""
        power = self._measured_w(now_s)
        if power is None:
            return None
        return FloorState(self.devices, power, now_unix_s - (now_s - self._t[-1]), len(self._t))


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    if not cum[-1] > 0:
        return float(np.median(values))
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])
