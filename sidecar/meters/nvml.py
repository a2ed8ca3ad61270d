"""The NVML meter: the GPU's own energy counter, in joules.

``read()`` returns ``nvmlDeviceGetTotalEnergyConsumption`` per selected GPU
(mJ since the driver loaded, converted to J). The counter does not wrap (64-bit
mJ) but starts again near 0 when the driver reloads; the meter passes that
reset through raw and the timeline handles it (``DeviceInfo.wrap_j`` is None).

Pre-Volta GPUs have no energy counter. There the meter integrates power over
its own polls (trapezoid rule, cumulative J from 0 at the first read), labels
itself ``EnergySource.INTEGRATED`` and logs one warning saying so: such
energy is only as good as the poll rate and the power sensor's averaging.

Devices are chosen by NVML index (``"0"``; PCI bus order, *not* affected by
CUDA_VISIBLE_DEVICES) or by UUID (``"GPU-..."``); ``None`` or ``"all"`` reads
every GPU. Each reading's time is the midpoint of the poll on the injected clock.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from sidecar.errors import (
    ConfigError,
    DeviceNotFound,
    MeterError,
    MeterReadError,
    MeterUnavailable,
    NotSupported,
)
from sidecar.meters.base import DeviceInfo, DeviceStatus, EnergySource, Reading
from sidecar.meters.nvml_lib import Handle, NvmlLib

__all__ = ["NvmlMeter"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Gpu:
    """One selected GPU and, where it has no energy counter, its integration state."""

    info: DeviceInfo
    handle: Handle
    integrate: bool = False
    instant_power: bool = True  # False once the POWER_INSTANT field proved unsupported
    last_t_s: float | None = None
    last_power_w: float = 0.0
    energy_j: float = 0.0


class NvmlMeter:
    """Cumulative GPU energy from NVML (J), plus power, utilization, clock, memory, limit."""

    def __init__(
        self,
        devices: Sequence[str] | str | None = None,
        lib: NvmlLib | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lib = lib if lib is not None else NvmlLib()
        self._clock = clock
        self._lib.init()
        try:
            self._gpus = self._select(devices)
            self._probe_energy()
        except BaseException:
            with contextlib.suppress(MeterError):
                self._lib.shutdown()
            raise
        self._closed = False

    # -- EnergyMeter ---------------------------------------------------------

    @property
    def source(self) -> EnergySource:
        """MEASURED (energy counter), or INTEGRATED if any GPU lacks the counter."""
        return EnergySource.INTEGRATED if any(g.integrate for g in self._gpus) else EnergySource.MEASURED

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        """The selected GPUs (id = UUID), in the order of ``Reading.energy_j``."""
        return tuple(g.info for g in self._gpus)

    def read(self) -> Reading:
        """Cumulative energy per GPU, J, as the counter reads (raw across driver reloads)."""
        t0 = self._clock()
        raw = [self._poll(g) for g in self._gpus]  # J from a counter, W where integrating
        t_s = (t0 + self._clock()) / 2.0
        energy_j = tuple(
            self._integrate(g, t_s, value) if g.integrate else value
            for g, value in zip(self._gpus, raw, strict=True)
        )
        return Reading(t_s=t_s, energy_j=energy_j)

    @property
    def fixed_grid(self) -> bool:
        """True when every GPU has an energy counter (they update on a fixed 100 ms grid on an H200);
        the poller then phase-locks each GPU's reads. Integrated power has no grid."""
        return not any(g.integrate for g in self._gpus)

    def read_device(self, index: int) -> float:
        """One GPU's energy counter (J), for per-device read schedules (``fixed_grid`` only)."""
        gpu = self._gpus[index]
        if gpu.integrate:
            raise NotSupported(f"GPU {gpu.info.id} integrates power: it has no counter to read alone")
        with _about(gpu):
            return self._lib.total_energy_j(gpu.handle)

    def status(self) -> tuple[DeviceStatus, ...]:
        """Power (W), utilization (0..1), SM clock (MHz), memory used (B), power limit (W).

        A reading the GPU does not support is ``None``; a lost GPU raises DeviceLost.
        """
        return tuple(self._status(g) for g in self._gpus)

    def close(self) -> None:
        """Shut NVML down (once)."""
        if not self._closed:
            self._closed = True
            self._lib.shutdown()

    @property
    def driver_version(self) -> str:
        """The NVIDIA driver version, for trace headers and logs."""
        return self._lib.driver_version()

    # -- selection -----------------------------------------------------------

    def _inventory(self) -> str:
        """Every GPU NVML sees, for error messages: ``0: GPU-... (name)``; a GPU that cannot say
        is listed with its error (which must not stand in for the message it is part of)."""
        lines = []
        for index in range(self._lib.device_count()):
            try:
                handle = self._lib.handle_by_index(index)
                lines.append(f"{index}: {self._lib.uuid(handle)} ({self._lib.name(handle)})")
            except MeterError as err:
                lines.append(f"{index}: <{str(err)[:120]}>")
        return "; ".join(lines) or "none"

    def _select(self, devices: Sequence[str] | str | None) -> list[_Gpu]:
        if isinstance(devices, str):
            devices = [d.strip() for d in devices.split(",") if d.strip()]
        count = self._lib.device_count()
        if devices is None or list(devices) in ([], ["all"]):
            ids: list[str] = [str(i) for i in range(count)]
        else:
            ids = list(devices)
        gpus: list[_Gpu] = []
        for device_id in ids:
            handle = self._handle(device_id, count)
            info = DeviceInfo(id=self._lib.uuid(handle), name=self._lib.name(handle), type="gpu", wrap_j=None)
            if any(g.info.id == info.id for g in gpus):
                raise ConfigError(f"devices: GPU {device_id!r} ({info.id}) is selected twice")
            gpus.append(_Gpu(info=info, handle=handle))
        if not gpus:
            raise MeterUnavailable(
                "NVML sees no GPUs: give the container a GPU (Kubernetes resource nvidia.com/gpu, "
                "docker --gpus), or choose --meter cpu-model"
            )
        return gpus

    def _handle(self, device_id: str, count: int) -> Handle:
        if device_id.isdigit():
            if int(device_id) >= count:
                raise DeviceNotFound(f"no GPU with index {device_id}; NVML sees: {self._inventory()}")
            return self._lib.handle_by_index(int(device_id))
        try:
            return self._lib.handle_by_uuid(device_id)
        except DeviceNotFound as err:
            raise DeviceNotFound(
                f"no GPU {device_id!r} (give an index or a GPU-... UUID); NVML sees: {self._inventory()}"
            ) from err

    def _probe_energy(self) -> None:
        """Find the GPUs without an energy counter (pre-Volta) and switch them to integration."""
        for gpu in self._gpus:
            with _about(gpu):
                try:
                    self._lib.total_energy_j(gpu.handle)
                except NotSupported:
                    gpu.integrate = True
        integrated = [g for g in self._gpus if g.integrate]
        if not integrated:
            return
        for gpu in integrated:
            if self._power_w(gpu) is None:
                raise NotSupported(
                    f"GPU {gpu.info.id} ({gpu.info.name}) reports neither energy nor power: "
                    "choose --meter cpu-model"
                )
        names = ", ".join(f"{g.info.id} ({g.info.name})" for g in integrated)
        log.warning(
            "NVML has no energy counter on %s (pre-Volta): integrating power over polls instead; "
            "energy is labelled energy.source=integrated and is only as good as the poll rate",
            names,
        )

    # -- readings ------------------------------------------------------------

    def _poll(self, gpu: _Gpu) -> float:
        """The counter (J) or, where integrating, the power now (W)."""
        if not gpu.integrate:
            with _about(gpu):
                return self._lib.total_energy_j(gpu.handle)
        power_w = self._power_w(gpu)
        if power_w is None:
            raise NotSupported(f"GPU {gpu.info.id}: the power reading stopped being supported")
        return power_w

    def _integrate(self, gpu: _Gpu, t_s: float, power_w: float) -> float:
        """Trapezoid step, J: energy += (P_prev + P_now) / 2 * dt; 0 at the first poll."""
        if gpu.last_t_s is not None:
            gpu.energy_j += (gpu.last_power_w + power_w) / 2.0 * max(0.0, t_s - gpu.last_t_s)
        gpu.last_t_s, gpu.last_power_w = t_s, power_w
        return gpu.energy_j

    def _power_w(self, gpu: _Gpu) -> float | None:
        """Instant power (W), falling back to the averaged power usage; None if neither works."""
        with _about(gpu):
            if gpu.instant_power:
                try:
                    return self._lib.power_instant_w(gpu.handle)
                except NotSupported:
                    gpu.instant_power = False
            try:
                return self._lib.power_usage_w(gpu.handle)
            except NotSupported:
                return None

    def _optional(self, gpu: _Gpu, read: Callable[[Handle], float | None]) -> float | None:
        """A reading that only informs: None where the GPU does not support it or it failed this
        time (one failed field must not keep every GPU's status stale); a lost GPU raises."""
        with _about(gpu):
            try:
                return read(gpu.handle)
            except (NotSupported, MeterReadError):
                return None

    def _status(self, gpu: _Gpu) -> DeviceStatus:
        return DeviceStatus(
            device_id=gpu.info.id,
            power_w=self._optional(gpu, lambda _: self._power_w(gpu)),
            utilization=self._optional(gpu, self._lib.utilization),
            sm_clock_mhz=self._optional(gpu, self._lib.sm_clock_mhz),
            memory_used_bytes=self._optional(gpu, self._lib.memory_used_bytes),
            power_limit_w=self._optional(gpu, self._lib.power_limit_w),
        )


@contextlib.contextmanager
def _about(gpu: _Gpu) -> Iterator[None]:
    """Prefix a meter error with the GPU it happened on (same exception type, original chained)."""
    try:
        yield
    except MeterError as err:
        raise type(err)(f"GPU {gpu.info.id}: {err}") from err
