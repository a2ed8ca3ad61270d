"""make_meter: one name per meter, errors that name the knob."""

from __future__ import annotations

import ctypes.util
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar.errors import ConfigError, MeterUnavailable
from sidecar.meters import METERS, CpuModelMeter, EnergyMeter, RaplMeter, ReplayMeter, make_meter
from tests.support import FakeClock


def test_the_meter_names_are_the_documented_four() -> None:
    assert METERS == ("nvml", "rapl", "cpu-model", "replay")


def test_an_unknown_name_is_a_config_error_listing_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown meter 'nvidia'") as info:
        make_meter("nvidia")
    assert all(name in str(info.value) for name in METERS)


def test_replay_without_a_path_names_the_replay_path_knob() -> None:
    with pytest.raises(ConfigError, match="replay_path"):
        make_meter("replay")


def test_replay_and_rapl_and_cpu_model_are_built_on_the_given_clock(tmp_path: Path) -> None:
    clock = FakeClock(42.0)
    trace = tmp_path / "t.csv"
    trace.write_text("t_s,device,energy_j\n0,GPU-a,1\n1,GPU-a,2\n")
    replay = make_meter("replay", replay_path=trace, replay_speed=2.0, clock=clock)
    assert isinstance(replay, ReplayMeter)
    clock.advance(0.5)
    assert replay.read().t_s == pytest.approx(42.5)

    zone = tmp_path / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text("1000000\n")
    rapl = make_meter("rapl", rapl_root=tmp_path / "powercap", clock=clock)
    assert isinstance(rapl, RaplMeter) and rapl.read().t_s == clock.t_s

    stat = Path("/proc/stat")
    if stat.exists():
        cpu = make_meter("cpu-model", cpu_idle_w=5.0, cpu_max_w=15.0, clock=clock)
        assert isinstance(cpu, CpuModelMeter) and "5-15 W" in cpu.devices[0].name


def test_selecting_gpus_for_a_meter_that_reads_none_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="devices"):
        make_meter("replay", devices=["0"], replay_path=tmp_path / "t.csv")
    with pytest.raises(ConfigError, match="replay_path"):  # "all" is the default: not an error
        make_meter("replay", devices="all")


def test_extra_meters_join_by_name_and_get_the_clock(tmp_path: Path) -> None:
    clock = FakeClock(3.0)
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 0 1 10 0 0 0 0 0 0\n")

    def sim(c: Callable[[], float]) -> EnergyMeter:  # stands in for sidecar/sim's factory
        return CpuModelMeter(proc_stat=stat, clock=c)

    meter = make_meter("sim", clock=clock, extra={"sim": sim})
    assert meter.read().t_s == 3.0
    with pytest.raises(ConfigError, match="valid: nvml, rapl, cpu-model, replay, sim"):
        make_meter("simulated", extra={"sim": sim})


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="this host has libnvidia-ml")
def test_nvml_on_a_host_without_the_driver_is_unavailable_with_the_fix() -> None:
    with pytest.raises(MeterUnavailable, match="--meter cpu-model"):
        make_meter("nvml")
