"""The meter protocol: one ``read()`` that returns cumulative joules per device.

Every meter converts its vendor units once, here at the boundary, and hands
the rest of the sidecar joules (J), watts (W) and seconds (s). Timestamps are
seconds on the sidecar's monotonic clock (the same clock the taps convert
work-event times into), so energy and work line up without wall-clock drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

__all__ = [
    "MAX_DEVICE_W",
    "DeviceInfo",
    "DeviceStatus",
    "EnergyMeter",
    "EnergySource",
    "Reading",
    "ScheduledMeter",
]


class EnergySource(StrEnum):
    """Where a meter's joules come from; shown on every output as ``energy.source``."""

    MEASURED = "measured"  # a hardware counter (NVML, RAPL)
    INTEGRATED = "integrated"  # hardware power readings integrated over time (pre-Volta NVML)
    ESTIMATE = "estimate"  # a model (cpu-model): never presented as a measurement
    SIMULATED = "simulated"  # the simulated GPU (tests, benchmarks, demo)
    REPLAY = "replay"  # a recorded trace played back


# Far above what one device draws (a B200's power limit is 1 kW): a counter that gains more than this
# a second read garbage, not energy (Zeus checks its counters for gains no device could make:
# ml-energy/zeus issue 113)
MAX_DEVICE_W = 10_000.0


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A device a meter reads.

    ``wrap_j`` is the counter's range in joules where it wraps (RAPL's
    ``max_energy_range_uj``); ``None`` where the counter only resets (NVML).
    ``max_w``: the most a read may show per second of the sidecar's clock; a gain above it is
    a bad read, not energy (the timeline's ``implausible_reads``). A trace replayed ``s`` times
    faster than it was recorded shows ``s`` times its power.
    """

    id: str  # stable id: GPU UUID, powercap zone path, "cpu"
    name: str  # human name: "NVIDIA H100 80GB HBM3", "package-0"
    type: str = "gpu"  # hw.type: gpu, cpu
    wrap_j: float | None = None
    max_w: float = MAX_DEVICE_W


@dataclass(frozen=True, slots=True)
class Reading:
    """One poll: cumulative energy per device at one instant.

    ``energy_j[i]`` belongs to ``meter.devices[i]``. It is the counter as read
    (after unit conversion), so it may go backwards on a reset or a wrap; the
    timeline, not the meter, turns that into energy.
    """

    t_s: float
    energy_j: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """Slower-changing device state (the study's latent metrics); ``None`` = not available."""

    device_id: str
    power_w: float | None = None  # instant power
    utilization: float | None = None  # 0..1, fraction of time a kernel ran
    sm_clock_mhz: float | None = None
    memory_used_bytes: float | None = None
    power_limit_w: float | None = None


@runtime_checkable
class EnergyMeter(Protocol):
    """What the sidecar needs from any energy source."""

    @property
    def source(self) -> EnergySource:
        """Measured, estimate, simulated or replay: labels every output."""
        ...

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        """The devices read, in the order of ``Reading.energy_j``."""
        ...

    def read(self) -> Reading:
        """Cumulative joules per device now. Cheap: called every poll (default 20 ms)."""
        ...

    def status(self) -> tuple[DeviceStatus, ...]:
        """Power, utilization, clocks, memory per device. Called less often (default 0.5 s)."""
        ...

    def close(self) -> None:
        """Release the library or files."""
        ...


@runtime_checkable
class ScheduledMeter(Protocol):
    """A meter that knows when its reading can next change (a replayed trace): no poll before then."""

    def next_change_s(self) -> float:
        """Sidecar-clock time (s) before which ``read()`` returns what it returns now (inf: never changes)."""
        ...
