"""The RAPL meter: CPU package energy from Linux powercap, in joules.

Zones live under ``/sys/class/powercap`` (the root is injectable for tests):
``intel-rapl:N`` is package N (AMD hosts use the same driver and names);
``intel-rapl:N:M`` are its subzones (core, uncore, dram), read only when
``subzones=True`` because they are *part of* the package: summing them with
their package counts energy twice.

Each zone's ``energy_uj`` is a counter in µJ (reported in J) that wraps at
``max_energy_range_uj`` (reported as ``DeviceInfo.wrap_j``). The meter returns
the raw counter; the timeline unwraps it using ``wrap_j``.

Since CVE-2020-8694 (PLATYPUS), ``energy_uj`` is readable by root only on most
distributions; the meter then fails with the fix instead of reading nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from sidecar.errors import MeterReadError, MeterUnavailable
from sidecar.meters.base import DeviceInfo, DeviceStatus, EnergySource, Reading

__all__ = ["DEFAULT_POWERCAP_ROOT", "RaplMeter"]

DEFAULT_POWERCAP_ROOT = Path("/sys/class/powercap")

_ZONE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")


def _zone_key(path: Path) -> tuple[int, int]:
    match = _ZONE.match(path.name)
    assert match is not None
    return int(match.group(1)), int(match.group(2) or -1)


class RaplMeter:
    """Cumulative CPU energy per RAPL zone (J), raw: the counter wraps at ``wrap_j``."""

    def __init__(
        self,
        root: Path | str = DEFAULT_POWERCAP_ROOT,
        *,
        subzones: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._root = Path(root)
        self._clock = clock
        zones = sorted(
            (
                p
                for p in (self._root.iterdir() if self._root.is_dir() else [])
                if (m := _ZONE.match(p.name))
                and (subzones or m.group(2) is None)
                and (p / "energy_uj").exists()
            ),
            key=_zone_key,
        )
        if not zones:
            raise MeterUnavailable(
                f"no RAPL zones under {self._root}: not an Intel/AMD host with powercap "
                "(modprobe intel_rapl_common), or run with /sys mounted "
                "(in a container: mount /sys/class/powercap read-only), or choose --meter cpu-model"
            )
        self._zones = tuple(zones)
        self._devices = tuple(self._describe(z) for z in zones)
        self.read()  # fail now, with the fix, if the counters are unreadable

    @property
    def source(self) -> EnergySource:
        """Always MEASURED: RAPL is the CPU's own energy counter."""
        return EnergySource.MEASURED

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        """One per zone: id ``intel-rapl:N[:M]``, name from the zone (``package-0``), type cpu."""
        return self._devices

    def read(self) -> Reading:
        """Each zone's ``energy_uj`` in J, as read (goes back by ``wrap_j`` on a wrap)."""
        t0 = self._clock()
        energy_j = tuple(self._energy_j(z) for z in self._zones)
        return Reading(t_s=(t0 + self._clock()) / 2.0, energy_j=energy_j)

    def status(self) -> tuple[DeviceStatus, ...]:
        """RAPL has counters only: every status field is None."""
        return tuple(DeviceStatus(device_id=d.id) for d in self._devices)

    def close(self) -> None:
        """Nothing to release: each read opens and closes its files."""

    def _describe(self, zone: Path) -> DeviceInfo:
        try:
            name = (zone / "name").read_text().strip() or zone.name
        except OSError:
            name = zone.name
        try:
            wrap_j: float | None = int((zone / "max_energy_range_uj").read_text()) / 1e6
        except (OSError, ValueError):
            wrap_j = None  # the timeline then treats a backwards step as a reset
        return DeviceInfo(id=zone.name, name=name, type="cpu", wrap_j=wrap_j)

    def _energy_j(self, zone: Path) -> float:
        path = zone / "energy_uj"
        try:
            text = path.read_text()
        except PermissionError as err:
            raise MeterUnavailable(
                f"cannot read {path}: permission denied (RAPL counters are root-only since "
                "CVE-2020-8694): run the sidecar as root, or make the counters readable: "
                f"`sudo chmod o+r {self._root}/intel-rapl:*/energy_uj` (lasts until reboot) or a udev rule "
                '(SUBSYSTEM=="powercap", ACTION=="add", RUN+="/bin/chmod o+r /sys%p/energy_uj")'
            ) from err
        except OSError as err:
            raise MeterReadError(f"cannot read {path}: {err}") from err
        try:
            return int(text) / 1e6
        except ValueError as err:
            raise MeterReadError(f"{path}: {text.strip()!r} is not an integer µJ count") from err
