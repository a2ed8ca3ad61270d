"""Energy meters: where the sidecar's joules come from.

Pick one by name with :func:`make_meter` (the ``--meter`` knob):

    nvml       the GPU's energy counter (J, measured; integrated power pre-Volta)
    rapl       the CPU's powercap counters (J, measured, wrap at DeviceInfo.wrap_j)
    cpu-model  CPU utilization x a power envelope (J, an ESTIMATE, never a measurement)
    replay     a recorded trace file played back (J, as recorded)

Every meter satisfies :class:`EnergyMeter` (``sidecar/meters/base.py``). The
simulated GPU lives in ``sidecar/sim/`` and joins through ``extra=``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from sidecar.errors import ConfigError, ReplayFormatError
from sidecar.meters.base import DeviceInfo, DeviceStatus, EnergyMeter, EnergySource, Reading
from sidecar.meters.cpu_model import DEFAULT_CPU_IDLE_W, DEFAULT_CPU_MAX_W, CpuModelMeter
from sidecar.meters.nvml import NvmlMeter
from sidecar.meters.rapl import DEFAULT_POWERCAP_ROOT, RaplMeter
from sidecar.meters.replay import ReplayMeter

__all__ = [
    "METERS",
    "CpuModelMeter",
    "DeviceInfo",
    "DeviceStatus",
    "EnergyMeter",
    "EnergySource",
    "MeterFactory",
    "NvmlMeter",
    "RaplMeter",
    "Reading",
    "ReplayMeter",
    "make_meter",
]

METERS = ("nvml", "rapl", "cpu-model", "replay")

MeterFactory = Callable[[Callable[[], float]], EnergyMeter]
"""Builds a meter on the given clock; how ``extra=`` adds meters defined elsewhere (``sim``)."""


def make_meter(
    name: str,
    *,
    devices: Sequence[str] | str | None = None,
    replay_path: Path | str | None = None,
    replay_speed: float = 1.0,
    cpu_idle_w: float = DEFAULT_CPU_IDLE_W,
    cpu_max_w: float = DEFAULT_CPU_MAX_W,
    rapl_root: Path | str = DEFAULT_POWERCAP_ROOT,
    clock: Callable[[], float] = time.monotonic,
    extra: Mapping[str, MeterFactory] | None = None,
) -> EnergyMeter:
    """The meter called ``name`` (one of :data:`METERS`, or a key of ``extra``).

    ``devices`` selects GPUs (index or UUID; None/"all" = every GPU) and applies
    to ``nvml`` only. ``extra`` maps further names (e.g. ``"sim"``) to factories
    called with ``clock``; it cannot replace the built-in names.
    Raises ConfigError naming the knob for an unknown name or a missing path;
    the meter itself raises MeterUnavailable (with the fix) where it cannot run.
    """
    extra = extra or {}
    valid = (*METERS, *(n for n in extra if n not in METERS))
    if name not in valid:
        raise ConfigError(f"meter: unknown meter {name!r}; valid: {', '.join(valid)}")
    if name != "nvml" and _selects_devices(devices):
        raise ConfigError(f"devices: {devices!r} selects GPUs; only the nvml meter reads GPUs (meter={name})")
    if name == "nvml":
        return NvmlMeter(devices, clock=clock)
    if name == "rapl":
        return RaplMeter(rapl_root, clock=clock)
    if name == "cpu-model":
        return CpuModelMeter(cpu_idle_w, cpu_max_w, clock=clock)
    if name == "replay":
        if replay_path is None or str(replay_path) == "":
            raise ConfigError("replay_path: the replay meter needs a trace file (--replay-path FILE.csv)")
        try:
            return ReplayMeter(replay_path, clock=clock, speed=replay_speed)
        except ReplayFormatError as err:  # the file and line named; the knob too, as every start-up error
            raise ReplayFormatError(f"replay_path: {err}") from err
    return extra[name](clock)


def _selects_devices(devices: Sequence[str] | str | None) -> bool:
    if devices is None:
        return False
    items = [d.strip() for d in devices.split(",")] if isinstance(devices, str) else list(devices)
    return [d for d in items if d] not in ([], ["all"])
