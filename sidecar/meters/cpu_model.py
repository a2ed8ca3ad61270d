"""The cpu-model meter: an ESTIMATE of CPU energy. It is never a measurement.

For machines with no energy counter at all (the CPU demo, a laptop, a VM
without powercap). Nothing here is measured: the meter reads how busy the CPU
was from ``/proc/stat`` and multiplies by a configured power envelope,

    power_w = idle_w + (max_w - idle_w) * utilization

integrated over the time between reads into cumulative joules. Every output
carries ``energy.source="estimate"`` (``EnergySource.ESTIMATE``) and the device
is named as an estimate, so nobody mistakes it for a reading.

Defaults: ``idle_w=10``, ``max_w=65``. 65 W is the common TDP class of desktop
CPUs (and the upper end of laptop sustained power); ~10 W is a typical package
power of such a CPU at idle. They describe the CPU package only, not the
machine. Set them from your CPU's datasheet, or calibrate them once against
``--meter rapl`` on a host that has it.

Utilization over an interval is (busy jiffies) / (all jiffies) of the ``cpu``
line, all cores together; idle and iowait count as not busy. Because power is
linear in utilization, the interval's mean utilization integrates the model
exactly (no sampling error beyond the model's own).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sidecar.errors import ConfigError, MeterReadError, MeterUnavailable
from sidecar.meters.base import DeviceInfo, DeviceStatus, EnergySource, Reading

__all__ = ["DEFAULT_CPU_IDLE_W", "DEFAULT_CPU_MAX_W", "DEFAULT_PROC_STAT", "CpuModelMeter"]

DEFAULT_CPU_IDLE_W = 10.0
DEFAULT_CPU_MAX_W = 65.0
DEFAULT_PROC_STAT = Path("/proc/stat")
DEVICE_ID = "cpu-model"


class CpuModelMeter:
    """ESTIMATED cumulative CPU energy (J) = envelope power (W) x utilization, integrated."""

    def __init__(
        self,
        idle_w: float = DEFAULT_CPU_IDLE_W,
        max_w: float = DEFAULT_CPU_MAX_W,
        *,
        proc_stat: Path | str = DEFAULT_PROC_STAT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 <= idle_w < float("inf"):
            raise ConfigError(f"cpu_idle_w: {idle_w} W must be a finite number >= 0")
        if not idle_w <= max_w < float("inf"):
            raise ConfigError(f"cpu_max_w: {max_w} W must be finite and >= cpu_idle_w ({idle_w} W)")
        self._idle_w = float(idle_w)
        self._max_w = float(max_w)
        self._path = Path(proc_stat)
        self._clock = clock
        self._info = DeviceInfo(
            id=DEVICE_ID,
            name=f"CPU (estimate: {idle_w:g}-{max_w:g} W envelope x utilization, not measured)",
            type="cpu",
            wrap_j=None,
        )
        self._busy, self._total = self._jiffies()
        self._t_s = clock()
        self._energy_j = 0.0
        self._utilization = 0.0
        self._power_w = self._idle_w

    @property
    def source(self) -> EnergySource:
        """Always ESTIMATE."""
        return EnergySource.ESTIMATE

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        """One pseudo-device, id ``cpu-model``, named as an estimate."""
        return (self._info,)

    def read(self) -> Reading:
        """Estimated energy since construction, J (0 at construction)."""
        busy, total = self._jiffies()
        t_s = self._clock()
        d_total = total - self._total
        if d_total > 0:
            self._utilization = min(1.0, max(0.0, (busy - self._busy) / d_total))
        self._power_w = self._idle_w + (self._max_w - self._idle_w) * self._utilization
        self._energy_j += self._power_w * max(0.0, t_s - self._t_s)
        self._busy, self._total, self._t_s = busy, total, t_s
        return Reading(t_s=t_s, energy_j=(self._energy_j,))

    def status(self) -> tuple[DeviceStatus, ...]:
        """The model's power (W) and the utilization (0..1) over the last read interval."""
        return (DeviceStatus(device_id=DEVICE_ID, power_w=self._power_w, utilization=self._utilization),)

    def close(self) -> None:
        """Nothing to release."""

    def _jiffies(self) -> tuple[int, int]:
        """(busy, total) jiffies of all CPUs from the aggregate ``cpu`` line."""
        try:
            text = self._path.read_text()
        except FileNotFoundError as err:
            raise MeterUnavailable(
                f"{self._path} not found: the cpu-model meter needs Linux /proc (or pass proc_stat=)"
            ) from err
        except OSError as err:
            raise MeterReadError(f"cannot read {self._path}: {err}") from err
        for line in text.splitlines():
            fields = line.split()
            if fields and fields[0] == "cpu":
                try:
                    # user nice system idle iowait irq softirq steal (guest is inside user)
                    counts = [int(f) for f in fields[1:9]]
                except ValueError as err:
                    raise MeterReadError(f"{self._path}: malformed cpu line {line!r}") from err
                if len(counts) < 4:
                    raise MeterReadError(f"{self._path}: cpu line has too few fields: {line!r}")
                idle = counts[3] + (counts[4] if len(counts) > 4 else 0)
                total = sum(counts)
                return total - idle, total
        raise MeterReadError(f"{self._path}: no aggregate 'cpu' line")
