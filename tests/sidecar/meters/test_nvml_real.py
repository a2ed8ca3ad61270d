"""NvmlMeter on a real GPU. Skipped where libnvidia-ml is absent (CI, CPU hosts).

The only meter tests that wait on real time: they poll the hardware counter
for at most a few seconds to see it advance and to measure its update period.
"""

from __future__ import annotations

import ctypes
import itertools
import statistics
import time
from collections.abc import Iterator

import pytest

from sidecar.errors import DeviceNotFound, NotSupported
from sidecar.meters.base import EnergySource
from sidecar.meters.nvml import NvmlMeter
from sidecar.meters.nvml_lib import NvmlLib


def _has_nvml() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _has_nvml(), reason="no libnvidia-ml.so.1 on this host")


@pytest.fixture
def gpu_meter() -> Iterator[NvmlMeter]:
    meter = NvmlMeter()
    yield meter
    meter.close()


def test_every_wrapped_call_answers_in_plausible_units() -> None:
    lib = NvmlLib()
    lib.init()
    try:
        assert lib.device_count() >= 1
        handle = lib.handle_by_index(0)
        uuid = lib.uuid(handle)
        assert uuid.startswith("GPU-") and lib.handle_by_uuid(uuid) is not None
        assert lib.name(handle) and lib.driver_version()
        readings = {}
        for name in ("total_energy_j", "power_instant_w", "power_usage_w", "utilization", "sm_clock_mhz"):
            try:
                readings[name] = getattr(lib, name)(handle)
            except NotSupported:
                readings[name] = None
        readings["memory_used_bytes"] = lib.memory_used_bytes(handle)
        readings["power_limit_w"] = lib.power_limit_w(handle)
        print(f"\n{lib.name(handle)} driver {lib.driver_version()}: {readings}")
        for name in ("power_instant_w", "power_usage_w"):
            assert readings[name] is None or 1.0 < readings[name] < 2000.0
        assert readings["utilization"] is None or 0.0 <= readings["utilization"] <= 1.0
        assert 50.0 < readings["power_limit_w"] < 2000.0
    finally:
        lib.shutdown()


def test_the_counter_advances_and_its_update_period_is_measured(gpu_meter: NvmlMeter) -> None:
    assert gpu_meter.source in (EnergySource.MEASURED, EnergySource.INTEGRATED)
    edges: list[float] = []
    costs: list[float] = []
    last = gpu_meter.read()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and len(edges) < 12:
        time.sleep(0.002)
        t0 = time.perf_counter()
        reading = gpu_meter.read()
        costs.append(time.perf_counter() - t0)
        assert all(now >= before for now, before in zip(reading.energy_j, last.energy_j, strict=True))
        if reading.energy_j[0] != last.energy_j[0]:
            edges.append(reading.t_s)
        last = reading
    gaps = [b - a for a, b in itertools.pairwise(edges)]
    print(
        f"\nsource={gpu_meter.source} edges={len(edges)} median update period="
        f"{statistics.median(gaps) if gaps else float('nan'):.4f} s, median poll cost="
        f"{statistics.median(costs) * 1e6:.0f} µs, status={gpu_meter.status()}"
    )
    assert len(edges) >= 3, "the energy counter did not advance within 2 s"
    assert 0.001 < statistics.median(gaps) < 1.5


def test_selecting_by_uuid_matches_index_and_unknown_lists_gpus(gpu_meter: NvmlMeter) -> None:
    uuid = gpu_meter.devices[0].id
    by_uuid, by_index = NvmlMeter([uuid]), NvmlMeter(["0"])
    assert by_uuid.devices == by_index.devices
    with pytest.raises(DeviceNotFound, match=uuid):
        NvmlMeter(["GPU-00000000-dead-beef-0000-000000000000"])
    by_uuid.close()
    by_index.close()
