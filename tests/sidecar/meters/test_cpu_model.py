"""CpuModelMeter: an estimate from /proc/stat x a power envelope, integrated exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.errors import ConfigError, MeterReadError, MeterUnavailable
from sidecar.meters.base import EnergyMeter, EnergySource
from sidecar.meters.cpu_model import CpuModelMeter
from tests.support import FakeClock


class ProcStat:
    """Writes a /proc/stat whose aggregate cpu line the test advances by jiffies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.busy = 1000  # user + system
        self.idle = 5000
        self.iowait = 100
        self.write()

    def write(self) -> None:
        user, system = self.busy // 2, self.busy - self.busy // 2
        self.path.write_text(
            f"cpu  {user} 0 {system} {self.idle} {self.iowait} 0 0 0 0 0\n"
            f"cpu0 {user} 0 {system} {self.idle} {self.iowait} 0 0 0 0 0\n"
            "intr 12345\nctxt 678\n"
        )

    def run(self, busy: int, idle: int, iowait: int = 0) -> None:
        self.busy += busy
        self.idle += idle
        self.iowait += iowait
        self.write()


@pytest.fixture
def stat(tmp_path: Path) -> ProcStat:
    return ProcStat(tmp_path / "stat")


def test_energy_is_the_envelope_times_utilization_integrated(stat: ProcStat) -> None:
    clock = FakeClock(0.0)
    m = CpuModelMeter(10.0, 65.0, proc_stat=stat.path, clock=clock)
    assert m.read().energy_j == (0.0,)
    stat.run(busy=100, idle=100)  # 50 % busy for 2 s: (10 + 55 * 0.5) W * 2 s = 75 J
    clock.advance(2.0)
    assert m.read().energy_j[0] == pytest.approx(75.0)
    stat.run(busy=400, idle=0)  # 100 % for 1 s: + 65 J
    clock.advance(1.0)
    assert m.read().energy_j[0] == pytest.approx(140.0)
    stat.run(busy=0, idle=300, iowait=100)  # iowait is not busy: idle power, + 10 J
    clock.advance(1.0)
    reading = m.read()
    assert reading.energy_j[0] == pytest.approx(150.0)
    assert reading.t_s == 4.0
    assert m.status()[0].utilization == 0.0 and m.status()[0].power_w == pytest.approx(10.0)


def test_it_is_labelled_an_estimate_everywhere(stat: ProcStat) -> None:
    m = CpuModelMeter(proc_stat=stat.path, clock=FakeClock())
    assert isinstance(m, EnergyMeter)
    assert m.source is EnergySource.ESTIMATE
    (device,) = m.devices
    assert device.id == "cpu-model" and device.type == "cpu"
    assert "estimate" in device.name and "10-65 W" in device.name


@pytest.mark.parametrize(
    ("idle_w", "max_w", "knob"),
    [
        (-1.0, 65.0, "cpu_idle_w"),
        (float("nan"), 65.0, "cpu_idle_w"),
        (50.0, 40.0, "cpu_max_w"),
        (10.0, float("inf"), "cpu_max_w"),
    ],
)
def test_an_impossible_envelope_is_a_config_error_naming_the_knob(
    stat: ProcStat, idle_w: float, max_w: float, knob: str
) -> None:
    with pytest.raises(ConfigError, match=knob):
        CpuModelMeter(idle_w, max_w, proc_stat=stat.path)


def test_missing_proc_stat_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailable, match="/proc"):
        CpuModelMeter(proc_stat=tmp_path / "nope")


def test_a_malformed_proc_stat_is_a_read_error(stat: ProcStat) -> None:
    m = CpuModelMeter(proc_stat=stat.path, clock=FakeClock())
    stat.path.write_text("cpu0 1 2 3 4\n")
    with pytest.raises(MeterReadError, match="no aggregate 'cpu' line"):
        m.read()
    stat.path.write_text("cpu  1 x 3 4\n")
    with pytest.raises(MeterReadError, match="malformed"):
        m.read()
