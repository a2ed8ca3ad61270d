"""NvmlMeter on a fake NVML: selection, raw counters, pre-Volta integration, status, loss."""

from __future__ import annotations

import logging

import pynvml
import pytest

from sidecar.errors import ConfigError, DeviceLost, DeviceNotFound, MeterUnavailable, NotSupported
from sidecar.meters.base import DeviceStatus, EnergyMeter, EnergySource
from sidecar.meters.nvml import NvmlMeter
from sidecar.meters.nvml_lib import NvmlLib
from tests.sidecar.meters.fake_nvml import FakeGpu, FakeNvml, steady, with_reset
from tests.support import FakeClock

UUIDS = [f"GPU-{i}{i}{i}{i}0000-1111-2222-3333-444455556666" for i in range(3)]


def fleet(*gpus: FakeGpu, library_missing: bool = False) -> tuple[FakeNvml, FakeClock]:
    clock = FakeClock(0.0)
    listed = list(gpus) or [FakeGpu(uuid=u, energy_j=steady(100.0 * (i + 1))) for i, u in enumerate(UUIDS)]
    return FakeNvml(listed, clock, library_missing=library_missing), clock


def meter(fake: FakeNvml, clock: FakeClock, devices: list[str] | str | None = None) -> NvmlMeter:
    return NvmlMeter(devices, lib=NvmlLib(fake), clock=clock)


def test_default_selection_reads_every_gpu_by_uuid_in_index_order() -> None:
    fake, clock = fleet()
    m = meter(fake, clock)
    assert isinstance(m, EnergyMeter)
    assert [d.id for d in m.devices] == UUIDS
    assert all(d.type == "gpu" and d.wrap_j is None for d in m.devices)
    assert m.source is EnergySource.MEASURED
    assert meter(fake, clock, ["all"]).devices == m.devices


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        (["1"], [UUIDS[1]]),
        ([UUIDS[2], "0"], [UUIDS[2], UUIDS[0]]),
        ("2, 0", [UUIDS[2], UUIDS[0]]),
    ],
)
def test_devices_are_selected_by_index_or_uuid_in_the_order_given(
    devices: list[str] | str, expected: list[str]
) -> None:
    fake, clock = fleet()
    assert [d.id for d in meter(fake, clock, devices).devices] == expected


@pytest.mark.parametrize("device", ["7", "GPU-does-not-exist"])
def test_unknown_device_names_the_id_and_lists_the_gpus_that_exist(device: str) -> None:
    fake, clock = fleet()
    with pytest.raises(DeviceNotFound) as info:
        meter(fake, clock, [device])
    message = str(info.value)
    assert repr(device) in message or f"index {device}" in message
    assert all(u in message for u in UUIDS)
    assert fake.init_calls == fake.shutdown_calls == 1  # NVML released on the failed start


@pytest.mark.parametrize("device", ["7", "GPU-typo"])
def test_a_gpu_that_cannot_say_its_name_does_not_hide_which_gpu_was_not_found(device: str) -> None:
    """Adversarial probe: a lost GPU's error from building the list replaced the not-found one."""
    gpus = [FakeGpu(uuid=UUIDS[0]), FakeGpu(uuid=UUIDS[1], lost_at_s=0.0)]
    fake, clock = fleet(*gpus)
    with pytest.raises(DeviceNotFound) as info:
        meter(fake, clock, [device])
    message = str(info.value)
    assert UUIDS[0] in message and "1: <" in message and "GPU is lost" in message


def test_a_status_field_that_fails_this_time_is_none_and_the_rest_is_read() -> None:
    """Adversarial probe: one failed power-limit read failed the whole status of every GPU (the old
    one stayed on /metrics as current) and was logged as a failed energy read."""
    fake, clock = fleet(FakeGpu(uuid=UUIDS[0], power_w=lambda t: 300.0))
    m = meter(fake, clock)
    fake.fail["nvmlDeviceGetEnforcedPowerLimit"] = pynvml.NVML_ERROR_UNKNOWN
    (status,) = m.status()
    assert status.power_limit_w is None and status.power_w == 300.0 and status.utilization == 0.42
    fake.fail["nvmlDeviceGetFieldValues"] = pynvml.NVML_ERROR_TIMEOUT
    assert m.status()[0].power_w is None  # not the last one, shown as current


def test_selecting_a_gpu_twice_is_a_config_error() -> None:
    fake, clock = fleet()
    with pytest.raises(ConfigError, match="selected twice"):
        meter(fake, clock, ["0", UUIDS[0]])


def test_read_returns_the_counters_in_joules_at_the_clock_time() -> None:
    fake, clock = fleet()
    m = meter(fake, clock)
    clock.t_s = 2.5
    reading = m.read()
    assert reading.t_s == 2.5
    assert reading.energy_j == pytest.approx((250.0, 500.0, 750.0))


def test_a_counter_reset_passes_through_raw_for_the_timeline() -> None:
    gpu = FakeGpu(uuid=UUIDS[0], energy_j=with_reset(steady(200.0, 9000.0), at_s=5.0, residual_j=0.25))
    fake, clock = fleet(gpu)
    m = meter(fake, clock)
    clock.t_s = 4.9
    before = m.read().energy_j[0]
    clock.t_s = 5.1
    after = m.read().energy_j[0]
    assert before == pytest.approx(9000.0 + 200.0 * 4.9)
    assert after == pytest.approx(0.25 + 200.0 * 0.1)  # went backwards: not hidden, not fixed


def test_pre_volta_integrates_power_by_trapezoid_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    ramp = FakeGpu(uuid=UUIDS[0], name="Tesla P100", energy_j=None, power_w=lambda t: 100.0 + 10.0 * t)
    fake, clock = fleet(ramp)
    with caplog.at_level(logging.WARNING, logger="sidecar.meters.nvml"):
        m = meter(fake, clock)
        assert m.source is EnergySource.INTEGRATED
        readings = []
        for step in range(21):  # 0 .. 2 s every 0.1 s
            clock.t_s = step * 0.1
            readings.append(m.read())
    assert readings[0].energy_j == (0.0,)
    # the trapezoid is exact for a linear ramp: ∫0^2 (100 + 10 t) dt = 200 + 20 = 220 J
    assert readings[-1].energy_j[0] == pytest.approx(220.0)
    warnings = [r for r in caplog.records if "integrating power" in r.getMessage()]
    assert len(warnings) == 1 and "Tesla P100" in warnings[0].getMessage()


def test_pre_volta_falls_back_to_power_usage_when_the_instant_field_is_missing() -> None:
    gpu = FakeGpu(uuid=UUIDS[0], energy_j=None, power_w=None, power_usage_w=lambda t: 50.0)
    fake, clock = fleet(gpu)
    m = meter(fake, clock)
    m.read()
    clock.t_s = 4.0
    assert m.read().energy_j[0] == pytest.approx(200.0)


def test_pre_volta_without_any_power_reading_is_not_supported() -> None:
    gpu = FakeGpu(uuid=UUIDS[0], energy_j=None, power_w=None, power_usage_w=None)
    fake, clock = fleet(gpu)
    with pytest.raises(NotSupported, match="cpu-model"):
        meter(fake, clock)


def test_status_reports_power_utilization_clock_memory_and_limit_in_our_units() -> None:
    fake, clock = fleet(FakeGpu(uuid=UUIDS[0], power_w=lambda t: 312.5))
    assert meter(fake, clock).status() == (
        DeviceStatus(
            device_id=UUIDS[0],
            power_w=312.5,
            utilization=0.42,
            sm_clock_mhz=1980.0,
            memory_used_bytes=12 * 2**30,
            power_limit_w=700.0,
        ),
    )


def test_status_fields_that_are_not_supported_are_none_and_only_those() -> None:
    gpu = FakeGpu(uuid=UUIDS[0], power_w=None, utilization_pct=None, power_limit_w=None)
    fake, clock = fleet(gpu)
    (status,) = meter(fake, clock).status()
    assert status.power_w == pytest.approx(69.5)  # instant field missing: averaged power usage
    assert status.utilization is None and status.power_limit_w is None
    assert status.sm_clock_mhz == 1980.0 and status.memory_used_bytes == 12 * 2**30
    gpu.power_usage_w = None
    assert meter(fake, clock).status()[0].power_w is None


def test_a_gpu_lost_mid_run_raises_device_lost_naming_it() -> None:
    gpus = [FakeGpu(uuid=UUIDS[0]), FakeGpu(uuid=UUIDS[1], lost_at_s=3.0)]
    fake, clock = fleet(*gpus)
    m = meter(fake, clock)
    clock.t_s = 2.0
    m.read()
    clock.t_s = 3.0
    with pytest.raises(DeviceLost, match=UUIDS[1]) as info:
        m.read()
    assert isinstance(info.value.__cause__, DeviceLost)
    assert isinstance(info.value.__cause__.__cause__, pynvml.NVMLError_GpuIsLost)
    with pytest.raises(DeviceLost, match=UUIDS[1]):
        m.status()


def test_missing_library_makes_the_meter_unavailable_with_the_fix() -> None:
    fake, clock = fleet(library_missing=True)
    with pytest.raises(MeterUnavailable, match="install the NVIDIA driver"):
        meter(fake, clock)


def test_a_host_where_nvml_sees_no_gpu_is_unavailable() -> None:
    fake = FakeNvml([], FakeClock())
    with pytest.raises(MeterUnavailable, match=r"nvidia\.com/gpu"):
        meter(fake, FakeClock())


def test_close_shuts_nvml_down_once() -> None:
    fake, clock = fleet()
    m = meter(fake, clock)
    assert m.driver_version == "570.124.06"
    m.close()
    m.close()
    assert fake.init_calls == fake.shutdown_calls == 1
