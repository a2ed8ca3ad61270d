"""A fake NVML *module*: pynvml's call shapes, constants, error classes and structs.

``NvmlLib(FakeNvml(...))`` exercises the same code as ``NvmlLib(pynvml)``:
errors are real ``pynvml.NVMLError`` instances (``NVMLError(code)`` builds the
matching subclass, e.g. ``NVMLError_GpuIsLost``), field values are real
``c_nvmlFieldValue_t`` arrays, utilization and memory real ctypes structs.
Values come back in NVML's units (mJ, mW, percent, bytes, MHz).

Each GPU is scripted as functions of the fake clock's time ``t`` (s):
energy counter (J; ``None`` = pre-Volta, NOT_SUPPORTED), power (W), readings
that are not supported, and ``lost_at_s`` after which every call on it fails
with GPU_IS_LOST. ``library_missing`` / ``driver_missing`` fail ``nvmlInit``
as a host without libnvidia-ml / the kernel module does. ``fail`` forces any
call to return an NVML code, for the error table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pynvml

T = TypeVar("T")
EnergyFn = Callable[[float], float]


def steady(power_w: float, start_j: float = 0.0) -> EnergyFn:
    """An energy counter (J) rising at a constant ``power_w`` from ``start_j`` at t=0."""
    return lambda t: start_j + power_w * t


def with_reset(energy: EnergyFn, at_s: float, residual_j: float = 0.25) -> EnergyFn:
    """``energy`` until ``at_s``, then a driver reload: the counter restarts near 0."""
    return lambda t: energy(t) if t < at_s else residual_j + energy(t) - energy(at_s)


@dataclass
class FakeGpu:
    """One scripted GPU. A ``None`` reading is NOT_SUPPORTED on this GPU."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    energy_j: EnergyFn | None = field(default_factory=lambda: steady(70.0, 5000.0))
    power_w: EnergyFn | None = lambda t: 70.0  # instant power (the POWER_INSTANT field)
    power_usage_w: EnergyFn | None = lambda t: 69.5  # nvmlDeviceGetPowerUsage (averaged)
    utilization_pct: int | None = 42
    sm_clock_mhz: int | None = 1980
    memory_used_bytes: int | None = 12 * 2**30
    power_limit_w: float | None = 700.0
    lost_at_s: float | None = None


class FakeNvml:
    """Stands in for the ``pynvml`` module; attributes mirror its names."""

    def __init__(
        self,
        gpus: list[FakeGpu],
        clock: Callable[[], float],
        *,
        library_missing: bool = False,
        driver_missing: bool = False,
        driver_version: str = "570.124.06",
    ) -> None:
        for name in dir(pynvml):  # constants, NVMLError and its subclasses, structs
            if name.startswith(("NVML_", "NVMLError", "c_nvml")):
                setattr(self, name, getattr(pynvml, name))
        self.gpus = gpus
        self.clock = clock
        self.library_missing = library_missing
        self.driver_missing = driver_missing
        self.version = driver_version
        self.fail: dict[str, int] = {}  # call name -> NVML return code to raise
        self.init_calls = 0
        self.shutdown_calls = 0
        self.calls: list[str] = []

    # -- helpers -------------------------------------------------------------

    def _enter(self, call: str, gpu: FakeGpu | None = None) -> float:
        self.calls.append(call)
        if call in self.fail:
            raise pynvml.NVMLError(self.fail[call])
        if self.init_calls <= self.shutdown_calls:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        t = self.clock()
        if gpu is not None and gpu.lost_at_s is not None and t >= gpu.lost_at_s:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return t

    @staticmethod
    def _supported(value: T | None) -> T:
        if value is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return value

    # -- pynvml's functions ----------------------------------------------------

    def nvmlInit(self) -> None:
        if "nvmlInit" in self.fail:
            raise pynvml.NVMLError(self.fail["nvmlInit"])
        if self.library_missing:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        if self.driver_missing:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
        self.init_calls += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self.version

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeGpu:
        self._enter("nvmlDeviceGetHandleByUUID")
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        self._enter("nvmlDeviceGetUUID", handle)
        return handle.uuid

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str:
        self._enter("nvmlDeviceGetName", handle)
        return handle.name

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeGpu) -> int:
        t = self._enter("nvmlDeviceGetTotalEnergyConsumption", handle)
        energy = self._supported(handle.energy_j)
        return round(energy(t) * 1e3)  # mJ, an integer as NVML returns

    def nvmlDeviceGetFieldValues(self, handle: FakeGpu, field_ids: list[int]) -> Any:
        t = self._enter("nvmlDeviceGetFieldValues", handle)
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        for value, field_id in zip(values, field_ids, strict=True):
            value.fieldId = field_id
            if field_id == pynvml.NVML_FI_DEV_POWER_INSTANT and handle.power_w is not None:
                value.nvmlReturn = pynvml.NVML_SUCCESS
                value.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
                value.value.uiVal = round(handle.power_w(t) * 1e3)  # mW
            else:
                value.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return values

    def nvmlDeviceGetPowerUsage(self, handle: FakeGpu) -> int:
        t = self._enter("nvmlDeviceGetPowerUsage", handle)
        return round(self._supported(handle.power_usage_w)(t) * 1e3)  # mW

    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu) -> Any:
        self._enter("nvmlDeviceGetUtilizationRates", handle)
        return pynvml.c_nvmlUtilization_t(gpu=self._supported(handle.utilization_pct), memory=10)

    def nvmlDeviceGetClockInfo(self, handle: FakeGpu, clock_type: int) -> int:
        self._enter("nvmlDeviceGetClockInfo", handle)
        assert clock_type == pynvml.NVML_CLOCK_SM
        return int(self._supported(handle.sm_clock_mhz))

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu) -> Any:
        self._enter("nvmlDeviceGetMemoryInfo", handle)
        used = self._supported(handle.memory_used_bytes)
        total = 80 * 2**30
        return pynvml.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeGpu) -> int:
        self._enter("nvmlDeviceGetEnforcedPowerLimit", handle)
        return round(self._supported(handle.power_limit_w) * 1e3)  # mW
