"""A narrow wrapper over the few NVML calls jouletrace uses.

Everything NVML-specific stops here:

- **units** are converted once: energy mJ -> J, power mW -> W, memory stays
  bytes, clocks stay MHz (named ``_mhz``), utilization percent -> 0..1;
- **errors**: every ``pynvml.NVMLError`` is translated through one table,
  :data:`NVML_ERRORS`, into the sidecar's exceptions (:mod:`sidecar.errors`),
  with ``raise ... from err`` so the NVML code stays visible.

``NvmlLib`` is built on a *module object* with pynvml's call shapes. The default
imports ``pynvml`` lazily, so the sidecar imports (and runs other meters) on
machines without it; tests pass a fake module (``tests/sidecar/meters/fake_nvml.py``).
Handles are opaque: whatever the module's ``nvmlDeviceGetHandleBy*`` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from sidecar.errors import (
    DeviceLost,
    DeviceNotFound,
    MeterError,
    MeterReadError,
    MeterUnavailable,
    NotSupported,
)

__all__ = ["NVML_ERRORS", "Handle", "NvmlLib"]

Handle = object  # an NVML device handle, opaque outside this module

_NO_NVML = (
    "install the NVIDIA driver on the host, run the container with the NVIDIA runtime "
    "(docker --gpus all / Kubernetes runtimeClassName: nvidia), or choose --meter cpu-model"
)

# NVML return code (pynvml constant name) -> (our exception, what to do about it).
# Codes not listed become MeterReadError. Names missing from an older pynvml are skipped.
NVML_ERRORS: dict[str, tuple[type[MeterError], str]] = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": (MeterUnavailable, f"libnvidia-ml.so.1 was not found: {_NO_NVML}"),
    "NVML_ERROR_DRIVER_NOT_LOADED": (MeterUnavailable, f"the NVIDIA kernel driver is not loaded: {_NO_NVML}"),
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": (
        MeterUnavailable,
        "libnvidia-ml and the kernel driver differ in version: reboot or reload the driver after "
        "an upgrade; in a container let the NVIDIA runtime mount the host's library",
    ),
    "NVML_ERROR_NO_PERMISSION": (
        MeterUnavailable,
        "no permission to query the GPU: give the sidecar access to /dev/nvidia* (the NVIDIA runtime "
        "does this), or choose --meter cpu-model",
    ),
    "NVML_ERROR_OPERATING_SYSTEM": (
        MeterUnavailable,
        f"the operating system blocked the request: {_NO_NVML}",
    ),
    "NVML_ERROR_UNINITIALIZED": (MeterReadError, "NVML is not initialised (the meter was closed?)"),
    "NVML_ERROR_NOT_SUPPORTED": (NotSupported, "this GPU or driver does not support the reading"),
    "NVML_ERROR_FUNCTION_NOT_FOUND": (NotSupported, "the driver is too old for this call: upgrade it"),
    "NVML_ERROR_INVALID_ARGUMENT": (DeviceNotFound, "no GPU with that index or UUID"),
    "NVML_ERROR_NOT_FOUND": (DeviceNotFound, "no GPU with that index or UUID"),
    "NVML_ERROR_GPU_NOT_FOUND": (DeviceNotFound, "no GPU with that index or UUID"),
    "NVML_ERROR_GPU_IS_LOST": (
        DeviceLost,
        "the GPU fell off the bus or stopped responding: check `dmesg` for Xid 79 and reset or "
        "replace the GPU",
    ),
    "NVML_ERROR_RESET_REQUIRED": (DeviceLost, "the GPU needs a reset (nvidia-smi -r) or a reboot"),
    "NVML_ERROR_TIMEOUT": (MeterReadError, "the driver timed out; the next poll may succeed"),
    "NVML_ERROR_IRQ_ISSUE": (MeterReadError, "interrupt problem between driver and GPU"),
    "NVML_ERROR_IN_USE": (MeterReadError, "the GPU is busy with another operation"),
    "NVML_ERROR_NOT_READY": (MeterReadError, "the driver is not ready yet"),
    "NVML_ERROR_NO_DATA": (MeterReadError, "no data yet"),
    "NVML_ERROR_MEMORY": (MeterReadError, "the driver is out of memory"),
    "NVML_ERROR_INSUFFICIENT_POWER": (MeterReadError, "a power cable of the GPU is not connected"),
    "NVML_ERROR_CORRUPTED_INFOROM": (MeterReadError, "the GPU's infoROM is corrupted (see nvidia-smi -q)"),
    "NVML_ERROR_UNKNOWN": (MeterReadError, "NVML reported an unknown error"),
}

# ctypes union member per nvmlValueType_t (c_nvmlValue_t)
_VALUE_MEMBER = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


def _text(value: object) -> str:
    """NVML strings come back as ``str`` (pynvml decodes) or ``bytes`` (older pynvml)."""
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlLib:
    """The NVML calls jouletrace makes, in the sidecar's units and exceptions.

    ``module`` is ``pynvml`` (imported here, lazily, when ``None``) or any
    object with the same functions, constants and ``NVMLError`` class.
    """

    def __init__(self, module: Any | None = None) -> None:
        if module is None:
            try:
                import pynvml
            except ImportError as err:
                raise MeterUnavailable(
                    "the nvml meter needs the nvidia-ml-py package (module pynvml): "
                    "pip install 'jouletrace[sidecar]', or choose --meter cpu-model"
                ) from err
            module = pynvml
        self._nvml: Any = module
        self._errors: dict[int, tuple[type[MeterError], str]] = {
            getattr(module, name): entry for name, entry in NVML_ERRORS.items() if hasattr(module, name)
        }

    # -- error translation -------------------------------------------------

    def _raise(self, code: int, what: str, err: BaseException | None) -> NoReturn:
        cls, fix = self._errors.get(code, (MeterReadError, "unexpected NVML error"))
        detail = str(err) if err is not None else f"NVML return code {code}"
        raise cls(f"{what}: {detail} (NVML code {code}): {fix}") from err

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self._nvml.NVMLError as err:
            self._raise(int(err.value), what, err)

    # -- lifecycle ---------------------------------------------------------

    def init(self) -> None:
        """Load libnvidia-ml and initialise NVML (reference counted by NVML)."""
        self._call("nvmlInit", self._nvml.nvmlInit)

    def shutdown(self) -> None:
        """Release NVML (one ``init`` each)."""
        self._call("nvmlShutdown", self._nvml.nvmlShutdown)

    def driver_version(self) -> str:
        """The driver version, e.g. ``"570.124.06"``."""
        return _text(self._call("nvmlSystemGetDriverVersion", self._nvml.nvmlSystemGetDriverVersion))

    # -- devices -----------------------------------------------------------

    def device_count(self) -> int:
        """How many GPUs NVML sees (all of them: NVML ignores CUDA_VISIBLE_DEVICES)."""
        return int(self._call("nvmlDeviceGetCount", self._nvml.nvmlDeviceGetCount))

    def handle_by_index(self, index: int) -> Handle:
        """The handle of GPU ``index`` (NVML's index order: PCI bus order)."""
        fn = self._nvml.nvmlDeviceGetHandleByIndex
        return self._call(f"nvmlDeviceGetHandleByIndex({index})", fn, index)

    def handle_by_uuid(self, uuid: str) -> Handle:
        """The handle of the GPU with this UUID (``"GPU-..."``)."""
        return self._call(f"nvmlDeviceGetHandleByUUID({uuid!r})", self._nvml.nvmlDeviceGetHandleByUUID, uuid)

    def uuid(self, handle: Handle) -> str:
        """The GPU's UUID, ``"GPU-xxxxxxxx-..."``: its stable id."""
        return _text(self._call("nvmlDeviceGetUUID", self._nvml.nvmlDeviceGetUUID, handle))

    def name(self, handle: Handle) -> str:
        """The product name, e.g. ``"NVIDIA H100 80GB HBM3"``."""
        return _text(self._call("nvmlDeviceGetName", self._nvml.nvmlDeviceGetName, handle))

    # -- readings ----------------------------------------------------------

    def total_energy_j(self, handle: Handle) -> float:
        """Energy since the driver loaded, J (NVML: mJ; Volta and newer, else NotSupported)."""
        fn = self._nvml.nvmlDeviceGetTotalEnergyConsumption
        return float(self._call("nvmlDeviceGetTotalEnergyConsumption", fn, handle)) / 1e3

    def power_instant_w(self, handle: Handle) -> float:
        """Instant power, W (field ``NVML_FI_DEV_POWER_INSTANT``, mW)."""
        what = "nvmlDeviceGetFieldValues(NVML_FI_DEV_POWER_INSTANT)"
        field_id = self._nvml.NVML_FI_DEV_POWER_INSTANT
        values = self._call(what, self._nvml.nvmlDeviceGetFieldValues, handle, [field_id])
        value = values[0]
        if value.nvmlReturn != self._nvml.NVML_SUCCESS:
            self._raise(int(value.nvmlReturn), what, None)
        member = _VALUE_MEMBER.get(int(value.valueType))
        if member is None:
            raise MeterReadError(f"{what}: unknown value type {value.valueType}")
        return float(getattr(value.value, member)) / 1e3

    def power_usage_w(self, handle: Handle) -> float:
        """Power draw, W (``nvmlDeviceGetPowerUsage``, mW; averaged over ~1 s on recent GPUs)."""
        return float(self._call("nvmlDeviceGetPowerUsage", self._nvml.nvmlDeviceGetPowerUsage, handle)) / 1e3

    def utilization(self, handle: Handle) -> float:
        """Fraction of the last sample period in which a kernel ran, 0..1 (NVML: percent)."""
        rates = self._call("nvmlDeviceGetUtilizationRates", self._nvml.nvmlDeviceGetUtilizationRates, handle)
        return float(rates.gpu) / 100.0

    def sm_clock_mhz(self, handle: Handle) -> float:
        """Current SM clock, MHz."""
        fn = self._nvml.nvmlDeviceGetClockInfo
        return float(self._call("nvmlDeviceGetClockInfo(SM)", fn, handle, self._nvml.NVML_CLOCK_SM))

    def memory_used_bytes(self, handle: Handle) -> float:
        """Device memory in use, bytes."""
        info = self._call("nvmlDeviceGetMemoryInfo", self._nvml.nvmlDeviceGetMemoryInfo, handle)
        return float(info.used)

    def power_limit_w(self, handle: Handle) -> float:
        """The enforced power limit, W (NVML: mW)."""
        fn = self._nvml.nvmlDeviceGetEnforcedPowerLimit
        return float(self._call("nvmlDeviceGetEnforcedPowerLimit", fn, handle)) / 1e3
