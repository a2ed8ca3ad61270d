"""The simulated GPU's true energy over time, and an NVML-like counter reading it.

:class:`EnergyTrace` is the exact cumulative energy (J) as a piecewise-linear
function of simulated time (s): power is constant within each step
(``energy_j / tau``) and each gap or idle period (``idle_w``). Before 0 the
energy is 0; after the run's end the GPU idles on at ``idle_w`` forever.

:class:`SimCounter` is what ``nvmlDeviceGetTotalEnergyConsumption`` shows: a
value that only changes at update instants, about every ``period_s``
(default 100 ms, each instant jittered by up to ``jitter_s``, the first at a
random phase). At an update the value becomes the true cumulative energy at
that instant (plus ``base_j``), floored to ``resolution_j`` (1 mJ: joules with
three decimals); between updates it holds. Optional faults:

- ``resets_s``: at each time the counter restarts from 0 (a driver reload);
  updates after it read the energy since the reset (``base_j`` is lost).
- ``wrap_j``: the value is taken modulo this range.

Update instants and values are precomputed with numpy up to ``horizon_s``
past the run's end; ``value_at`` is one ``searchsorted``. Beyond the horizon
updates fall on the unjittered grid and are computed on demand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sidecar.errors import ConfigError

__all__ = ["CounterConfig", "EnergyTrace", "SimCounter"]

FloatArray = NDArray[np.float64]


class EnergyTrace:
    """Exact cumulative energy, power and busy time of the simulated GPU.

    ``t0_s``, ``t1_s``, ``energy_j``: the steps (sorted, not overlapping, within
    ``[0, duration_s]``); everything outside a step draws ``idle_w``.
    """

    def __init__(
        self,
        t0_s: ArrayLike,
        t1_s: ArrayLike,
        energy_j: ArrayLike,
        idle_w: float,
        duration_s: float,
    ) -> None:
        t0 = np.asarray(t0_s, dtype=np.float64)
        t1 = np.asarray(t1_s, dtype=np.float64)
        e = np.asarray(energy_j, dtype=np.float64)
        n = len(t0)
        times = np.empty(2 * n + 2)
        times[0] = 0.0
        times[1:-1:2] = t0
        times[2:-1:2] = t1
        times[-1] = duration_s
        dt = np.diff(times)
        if np.any(dt < 0):
            raise ConfigError("energy trace: steps overlap or lie outside [0, duration_s]")
        seg_j = np.empty(2 * n + 1)
        seg_j[0::2] = idle_w * dt[0::2]
        seg_j[1::2] = e
        busy = np.zeros(2 * n + 1)
        busy[1::2] = dt[1::2]
        self.idle_w = idle_w
        self.duration_s = float(duration_s)
        self.times_s: FloatArray = times
        self.cum_j: FloatArray = np.concatenate(([0.0], np.cumsum(seg_j)))
        self.cum_busy_s: FloatArray = np.concatenate(([0.0], np.cumsum(busy)))
        with np.errstate(divide="ignore", invalid="ignore"):
            self.power_w: FloatArray = np.where(dt > 0, seg_j / np.where(dt > 0, dt, 1.0), idle_w)
        self.idle_j = float(seg_j[0::2].sum())
        self.total_j = float(self.cum_j[-1])

    def energy_at(self, t_s: ArrayLike) -> FloatArray:
        """Cumulative true energy (J) at each time ``t_s`` (s)."""
        t = np.asarray(t_s, dtype=np.float64)
        inside = np.interp(t, self.times_s, self.cum_j)
        after = self.total_j + self.idle_w * (t - self.duration_s)
        return np.where(t <= self.duration_s, np.where(t < 0, 0.0, inside), after)

    def busy_at(self, t_s: ArrayLike) -> FloatArray:
        """Cumulative seconds spent in steps up to each time ``t_s``."""
        t = np.asarray(t_s, dtype=np.float64)
        return np.interp(t, self.times_s, self.cum_busy_s)

    def power_at(self, t_s: float) -> float:
        """Instant power (W) at ``t_s``: the power of the step or gap containing it."""
        if t_s < 0 or t_s >= self.duration_s:
            return self.idle_w
        i = int(np.searchsorted(self.times_s, t_s, side="right")) - 1
        return float(self.power_w[min(max(i, 0), len(self.power_w) - 1)])

    def utilization(self, t_s: float, window_s: float = 1.0) -> float:
        """Fraction of ``[t_s - window_s, t_s]`` spent in steps (NVML's GPU utilization)."""
        busy = self.busy_at(np.array([t_s - window_s, t_s]))
        return float((busy[1] - busy[0]) / window_s)


@dataclass(frozen=True, slots=True)
class CounterConfig:
    """The counter's behaviour; ``phase_s=None`` draws the first update in ``[0, period_s)``."""

    period_s: float = 0.1
    jitter_s: float = 0.002
    phase_s: float | None = None
    resolution_j: float = 1e-3
    base_j: float = 0.0
    resets_s: tuple[float, ...] = ()
    wrap_j: float | None = None
    horizon_s: float = 60.0

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the knob that is invalid."""
        if not self.period_s > 0:
            raise ConfigError(f"counter.period_s must be > 0, got {self.period_s}")
        if not 0 <= self.jitter_s < self.period_s / 2:
            raise ConfigError(f"counter.jitter_s must be in [0, period_s/2), got {self.jitter_s}")
        if self.phase_s is not None and not self.phase_s >= 0:
            raise ConfigError(f"counter.phase_s must be >= 0, got {self.phase_s}")
        if not self.resolution_j > 0:
            raise ConfigError(f"counter.resolution_j must be > 0, got {self.resolution_j}")
        if self.base_j < 0:
            raise ConfigError(f"counter.base_j must be >= 0, got {self.base_j}")
        if self.wrap_j is not None and not self.wrap_j >= self.resolution_j:
            raise ConfigError(f"counter.wrap_j must be >= resolution_j, got {self.wrap_j}")
        if list(self.resets_s) != sorted(self.resets_s):
            raise ConfigError("counter.resets_s must be sorted")
        if self.horizon_s < 0:
            raise ConfigError(f"counter.horizon_s must be >= 0, got {self.horizon_s}")


class SimCounter:
    """An NVML-like cumulative energy counter over an :class:`EnergyTrace`."""

    def __init__(self, trace: EnergyTrace, config: CounterConfig, rng: np.random.Generator) -> None:
        config.check()
        self.trace = trace
        self.config = config
        period = config.period_s
        phase = float(rng.uniform(0.0, period)) if config.phase_s is None else config.phase_s
        self._phase_s = phase
        n = int(np.ceil((trace.duration_s + config.horizon_s - phase) / period)) + 1
        grid = phase + period * np.arange(max(n, 1))
        jitter = rng.uniform(-config.jitter_s, config.jitter_s, size=len(grid))
        self.update_times_s: FloatArray = np.maximum(grid + jitter, 0.0)
        self._last_grid_s = float(grid[-1])
        self._resets_s = np.asarray(config.resets_s, dtype=np.float64)
        self._reset_j = trace.energy_at(self._resets_s)
        self._initial_j = self._quantize(np.array([config.base_j]), np.array([0.0]))[0]
        self.update_values_j: FloatArray = self._values(self.update_times_s)

    def value_at(self, t_s: float) -> float:
        """The counter as read at time ``t_s`` (J, a multiple of ``resolution_j``)."""
        return float(self.values_at(np.array([t_s]))[0])

    def values_at(self, t_s: ArrayLike) -> FloatArray:
        """:meth:`value_at` for many times at once."""
        t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        i = np.searchsorted(self.update_times_s, t, side="right") - 1
        out = np.where(i >= 0, self.update_values_j[np.maximum(i, 0)], self._initial_j)
        late = t > self._last_grid_s + self.config.period_s
        if np.any(late):  # past the precomputed horizon: unjittered grid, on demand
            j = np.floor((t[late] - self._phase_s) / self.config.period_s)
            out[late] = self._values(self._phase_s + self.config.period_s * j)
        return out

    def _values(self, u_s: FloatArray) -> FloatArray:
        """Counter values (J) set at update instants ``u_s``."""
        energy = self.trace.energy_at(u_s)
        base = np.full(len(u_s), self.config.base_j)
        if len(self._resets_s):
            k = np.searchsorted(self._resets_s, u_s, side="right") - 1
            reset = k >= 0
            energy = energy - np.where(reset, self._reset_j[np.maximum(k, 0)], 0.0)
            base = np.where(reset, 0.0, base)
        return self._quantize(base, energy)

    def _quantize(self, base_j: FloatArray, energy_j: FloatArray) -> FloatArray:
        res = self.config.resolution_j
        units = np.floor((base_j + energy_j) / res).astype(np.int64)
        if self.config.wrap_j is not None:
            units = units % round(self.config.wrap_j / res)
        return units.astype(np.float64) / (1.0 / res)  # 1234 / 1000 reads 1.234 exactly
