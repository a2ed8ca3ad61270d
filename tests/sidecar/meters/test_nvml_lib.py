"""NvmlLib: units converted once, every NVML return code through one table."""

from __future__ import annotations

import ctypes.util
import sys

import pynvml
import pytest

from sidecar.errors import (
    DeviceLost,
    DeviceNotFound,
    MeterError,
    MeterReadError,
    MeterUnavailable,
    NotSupported,
)
from sidecar.meters.nvml_lib import NVML_ERRORS, NvmlLib
from tests.sidecar.meters.fake_nvml import FakeGpu, FakeNvml, steady
from tests.support import FakeClock

UUID = "GPU-aaaaaaaa-0000-0000-0000-000000000000"


def make(**gpu: object) -> tuple[NvmlLib, FakeNvml, FakeGpu, FakeClock]:
    clock = FakeClock(10.0)
    fake_gpu = FakeGpu(uuid=UUID, **gpu)  # type: ignore[arg-type]
    fake = FakeNvml([fake_gpu], clock)
    lib = NvmlLib(fake)
    lib.init()
    return lib, fake, fake_gpu, clock


def test_readings_are_converted_to_joules_watts_fraction_bytes_mhz() -> None:
    lib, _, gpu, _ = make(energy_j=steady(100.0, 1234.5), power_w=lambda t: 321.25)
    assert lib.total_energy_j(gpu) == pytest.approx(1234.5 + 100.0 * 10.0)
    assert lib.power_instant_w(gpu) == pytest.approx(321.25)
    assert lib.power_usage_w(gpu) == pytest.approx(69.5)
    assert lib.utilization(gpu) == pytest.approx(0.42)
    assert lib.sm_clock_mhz(gpu) == 1980.0
    assert lib.memory_used_bytes(gpu) == 12 * 2**30
    assert lib.power_limit_w(gpu) == pytest.approx(700.0)


def test_device_identity_and_driver_version_come_back_as_str() -> None:
    lib, fake, gpu, _ = make()
    assert lib.device_count() == 1
    assert lib.handle_by_index(0) is gpu
    assert lib.handle_by_uuid(UUID) is gpu
    assert lib.uuid(gpu) == UUID
    assert lib.name(gpu) == "NVIDIA H100 80GB HBM3"
    assert lib.driver_version() == "570.124.06"
    fake.version = b"535.54.03"  # type: ignore[assignment]  # older pynvml returned bytes
    assert lib.driver_version() == "535.54.03"


@pytest.mark.parametrize(("code_name", "expected"), [(n, e[0]) for n, e in NVML_ERRORS.items()])
def test_every_nvml_code_in_the_table_becomes_its_own_exception_with_the_fix(
    code_name: str, expected: type[MeterError]
) -> None:
    lib, fake, gpu, _ = make()
    code = getattr(pynvml, code_name)
    fake.fail["nvmlDeviceGetTotalEnergyConsumption"] = code
    with pytest.raises(expected) as info:
        lib.total_energy_j(gpu)
    assert type(info.value) is expected
    assert isinstance(info.value.__cause__, pynvml.NVMLError)
    assert info.value.__cause__.value == code
    assert f"NVML code {code}" in str(info.value)
    assert NVML_ERRORS[code_name][1] in str(info.value)


def test_a_code_missing_from_the_table_is_a_read_error() -> None:
    lib, fake, gpu, _ = make()
    fake.fail["nvmlDeviceGetPowerUsage"] = pynvml.NVML_ERROR_INSUFFICIENT_SIZE
    with pytest.raises(MeterReadError, match="nvmlDeviceGetPowerUsage"):
        lib.power_usage_w(gpu)


def test_missing_library_at_init_says_how_to_fix_it() -> None:
    fake = FakeNvml([], FakeClock(), library_missing=True)
    with pytest.raises(MeterUnavailable, match="NVIDIA runtime") as info:
        NvmlLib(fake).init()
    assert "--meter cpu-model" in str(info.value)
    assert isinstance(info.value.__cause__, pynvml.NVMLError_LibraryNotFound)


def test_driver_not_loaded_at_init_is_unavailable() -> None:
    fake = FakeNvml([], FakeClock(), driver_missing=True)
    with pytest.raises(MeterUnavailable, match="driver is not loaded"):
        NvmlLib(fake).init()


def test_lost_gpu_raises_device_lost_from_gpu_is_lost() -> None:
    lib, _, gpu, clock = make(lost_at_s=11.0)
    lib.total_energy_j(gpu)
    clock.advance(1.0)
    with pytest.raises(DeviceLost, match="Xid 79") as info:
        lib.total_energy_j(gpu)
    assert isinstance(info.value.__cause__, pynvml.NVMLError_GpuIsLost)


def test_unknown_index_and_uuid_are_device_not_found() -> None:
    lib, _, _, _ = make()
    with pytest.raises(DeviceNotFound):
        lib.handle_by_index(3)
    with pytest.raises(DeviceNotFound):
        lib.handle_by_uuid("GPU-nope")


def test_instant_power_field_not_supported_per_value_is_not_supported() -> None:
    lib, _, gpu, _ = make(power_w=None)
    with pytest.raises(NotSupported, match="POWER_INSTANT"):
        lib.power_instant_w(gpu)


def test_unsupported_readings_raise_not_supported() -> None:
    lib, _, gpu, _ = make(energy_j=None, utilization_pct=None, sm_clock_mhz=None)
    for read in (lib.total_energy_j, lib.utilization, lib.sm_clock_mhz):
        with pytest.raises(NotSupported):
            read(gpu)


def test_without_the_pynvml_package_the_meter_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(MeterUnavailable, match="nvidia-ml-py"):
        NvmlLib()


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="this host has libnvidia-ml")
def test_real_pynvml_without_the_driver_library_is_unavailable_with_the_fix() -> None:
    with pytest.raises(MeterUnavailable, match=r"libnvidia-ml\.so\.1 was not found"):
        NvmlLib().init()
