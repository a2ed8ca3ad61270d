"""Read each device on its own phase-locked schedule; hand the timeline readings in time order.

A meter whose counters update on a fixed grid (NVML: every 100 ms, fixed phase;
docs/measurements/nvml.md) need not be read every poll: :class:`PhasedReader`
keeps one :class:`~sidecar.meters.phase_lock.PhaseLock` per device, does the read
that is due first, and turns what the locks date into :class:`Reading` objects.

The timeline takes readings of *all* devices at one instant, so each dated
update of device ``i`` becomes two readings: all devices' values just before the
update (``BRACKET_S`` earlier) and just after it. The timeline then sees the
change inside a window ``BRACKET_S`` wide and dates it there. A reading at time
``t`` is only emitted once every device has been read after ``t`` (so no device
can still report an update before it): readings trail the reads by at most one
read period of the slowest device. With no update for ``heartbeat_s`` a reading
without a change is emitted, so the timeline's forced edges still come.

A device whose lock is lost reads every ``poll_s`` (dithered ±25 %, the fixed
path) until it locks again; one whose read failed waits ``poll_s`` before the
next try, and after ``unlock_after_errors`` failures in a row starts searching
again (the grid may have moved while it could not look) and is no longer waited for before
readings are emitted. Units: seconds, joules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from sidecar.meters.base import Reading
from sidecar.meters.phase_lock import PhaseLock

__all__ = ["BRACKET_S", "GridMeter", "PhasedReader"]

BRACKET_S = 1e-6  # the change window the timeline sees around a dated update


@runtime_checkable
class GridMeter(Protocol):
    """A meter that can read one device at a time and says whether its counters update on a grid."""

    @property
    def fixed_grid(self) -> bool:
        """True when every device's counter updates on a fixed-period, fixed-phase grid."""
        ...

    def read_device(self, index: int) -> float:
        """Cumulative joules of ``devices[index]`` now (raw, as ``read()`` returns them)."""
        ...


class PhasedReader:
    """One phase lock per device; one read per call to :meth:`read_due`."""

    def __init__(
        self,
        meter: GridMeter,
        devices: int,
        *,
        poll_s: float,
        clock: Callable[[], float],
        heartbeat_s: float = 0.5,
        unlock_after_errors: int = 3,
        seed: int | None = None,
    ) -> None:
        self._meter = meter
        self._clock = clock
        self.poll_s, self.heartbeat_s, self.unlock_after_errors = poll_s, heartbeat_s, unlock_after_errors
        self.locks = [
            PhaseLock(search_s=poll_s, seed=None if seed is None else seed + i) for i in range(devices)
        ]
        self._retry_s = [-math.inf] * devices  # no read before this (after a failed read)
        self._failures = [0] * devices  # failed reads in a row
        self._sampled_s = [-math.inf] * devices  # the last sample of each device
        self._value = [math.nan] * devices  # value as of the last emitted reading (nan: not read yet)
        self._pending: list[list[tuple[float, float]]] = [[] for _ in range(devices)]  # (dated s, J)
        self._emitted_s = -math.inf

    def next_due_s(self) -> float:
        """When the next read is due (start time, s)."""
        return min(self._due(i) for i in range(len(self.locks)))

    def read_due(self) -> list[Reading]:
        """Do the read due first (now, if it is late); return the readings that became final.

        A meter error propagates after the device's retry is scheduled.
        """
        due = [self._due(i) for i in range(len(self.locks))]
        now_s = self._clock()
        locked = [i for i, t in enumerate(due) if t <= now_s and self.locks[i].locked]
        # a locked device's planned read is timed to its update: it goes before any search read
        self._read(min(locked or range(len(due)), key=due.__getitem__))
        return self._emit()

    def read_all(self) -> list[Reading]:
        """Read every device now (the last pass before a stop): the readings reach up to now."""
        for i in range(len(self.locks)):
            self._read(i)
        return self._emit()

    def _read(self, i: int) -> None:
        start_s = self._clock()
        try:
            energy_j = self._meter.read_device(i)
        except Exception:
            self._failed(i, start_s)
            raise
        end_s = self._clock()
        self._failures[i] = 0
        dated_s = self.locks[i].observe(start_s, end_s, energy_j)
        if math.isnan(self._value[i]):
            self._value[i] = energy_j  # the base value
        elif dated_s is not None:
            self._pending[i].append((dated_s, energy_j))
        self._sampled_s[i] = 0.5 * (start_s + end_s)

    def _due(self, i: int) -> float:
        return max(self.locks[i].next_read_s(), self._retry_s[i])

    def _failed(self, i: int, now_s: float) -> None:
        self._failures[i] += 1
        self._retry_s[i] = now_s + self.poll_s
        if self._failures[i] == self.unlock_after_errors:
            self.locks[i].reset()

    def _emit(self) -> list[Reading]:
        """Readings up to the time every device has been read past, in time order; a device whose
        reads keep failing (``unlock_after_errors`` in a row) is not waited for: its last value
        carries on, and its gain comes with its next good read (waited for, every other device's
        updates piled up unemitted and the timeline stopped for all of them)."""
        reading = [
            t for t, n in zip(self._sampled_s, self._failures, strict=True) if n < self.unlock_after_errors
        ]
        horizon_s = min(reading, default=-math.inf)
        if horizon_s == -math.inf:
            return []
        changes = sorted((t, i, e) for i, p in enumerate(self._pending) for t, e in p if t <= horizon_s)
        for _, i, _ in changes:
            self._pending[i].pop(0)
        values = self._value
        out: list[Reading] = []
        if self._emitted_s == -math.inf:  # the first reading, the timeline's base: as of the horizon
            for _, i, energy_j in changes:
                values[i] = energy_j
            changes = []
            out.append(Reading(horizon_s, tuple(values)))
            self._emitted_s = horizon_s
        for t_s, i, energy_j in changes:
            if t_s - BRACKET_S > self._emitted_s:  # every device just before the update
                out.append(Reading(t_s - BRACKET_S, tuple(values)))
            values[i] = energy_j
            t_s = max(t_s, self._emitted_s + 1e-9)
            if out and out[-1].t_s == t_s:  # two devices' updates dated at one instant
                out.pop()
            out.append(Reading(t_s, tuple(values)))
            self._emitted_s = t_s
        if horizon_s - self._emitted_s >= self.heartbeat_s:  # no update for a while: say so
            out.append(Reading(horizon_s, tuple(values)))
            self._emitted_s = horizon_s
        return out
