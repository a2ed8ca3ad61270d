"""RaplMeter on a fake powercap tree: zones, µJ -> J, wrap range, permission and absence."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.errors import MeterReadError, MeterUnavailable
from sidecar.meters.base import EnergyMeter, EnergySource
from sidecar.meters.rapl import RaplMeter
from tests.support import FakeClock

MAX_UJ = 262143328850  # a real package's max_energy_range_uj (~262 kJ)


def zone(root: Path, zone_id: str, name: str, energy_uj: int, max_uj: int | None = MAX_UJ) -> Path:
    path = root / zone_id
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    if max_uj is not None:
        (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


@pytest.fixture
def powercap(tmp_path: Path) -> Path:
    """Two packages (numbered to catch a text sort), a core subzone, and directories to skip."""
    zone(tmp_path, "intel-rapl:0", "package-0", 1_500_000)
    zone(tmp_path, "intel-rapl:10", "package-10", 3_000_000, max_uj=None)
    zone(tmp_path, "intel-rapl:2", "package-2", 2_000_000)
    zone(tmp_path, "intel-rapl:0:0", "core", 700_000)
    (tmp_path / "intel-rapl").mkdir()  # the control type, no counter
    zone(tmp_path, "intel-rapl-mmio:0", "package-0", 9)  # same package via MMIO: not read twice
    return tmp_path


def test_packages_are_read_in_joules_in_numeric_order(powercap: Path) -> None:
    m = RaplMeter(powercap, clock=FakeClock(7.0))
    assert isinstance(m, EnergyMeter)
    assert m.source is EnergySource.MEASURED
    assert [(d.id, d.name, d.type) for d in m.devices] == [
        ("intel-rapl:0", "package-0", "cpu"),
        ("intel-rapl:2", "package-2", "cpu"),
        ("intel-rapl:10", "package-10", "cpu"),
    ]
    reading = m.read()
    assert reading.t_s == 7.0
    assert reading.energy_j == pytest.approx((1.5, 2.0, 3.0))


def test_subzones_are_read_only_when_asked_and_follow_their_package(powercap: Path) -> None:
    m = RaplMeter(powercap, subzones=True, clock=FakeClock())
    assert [d.id for d in m.devices] == ["intel-rapl:0", "intel-rapl:0:0", "intel-rapl:2", "intel-rapl:10"]
    assert m.read().energy_j[1] == pytest.approx(0.7)


def test_wrap_range_is_reported_and_a_wrap_is_passed_through_raw(powercap: Path) -> None:
    m = RaplMeter(powercap, clock=FakeClock())
    assert m.devices[0].wrap_j == pytest.approx(MAX_UJ / 1e6)
    assert m.devices[2].wrap_j is None  # no max_energy_range_uj: unknown range
    (powercap / "intel-rapl:0" / "energy_uj").write_text(f"{MAX_UJ - 1000}\n")
    before = m.read().energy_j[0]
    (powercap / "intel-rapl:0" / "energy_uj").write_text("5000\n")
    after = m.read().energy_j[0]
    assert after == pytest.approx(0.005) and after < before  # the timeline unwraps with wrap_j


def test_no_zones_is_unavailable_and_says_why(tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailable, match=r"no RAPL zones under .*/sys"):
        RaplMeter(tmp_path)
    with pytest.raises(MeterUnavailable, match="no RAPL zones"):
        RaplMeter(tmp_path / "missing")


def test_permission_denied_on_the_counter_names_the_fix(
    powercap: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_read_text = Path.read_text

    def root_only(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == "energy_uj":  # as on a host patched for CVE-2020-8694, whoever runs the test
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", root_only)
    with pytest.raises(MeterUnavailable, match="permission denied") as info:
        RaplMeter(powercap)
    message = str(info.value)
    assert "root" in message and "chmod" in message and "udev" in message
    assert isinstance(info.value.__cause__, PermissionError)


def test_a_counter_that_is_not_a_number_is_a_read_error(powercap: Path) -> None:
    m = RaplMeter(powercap)
    (powercap / "intel-rapl:2" / "energy_uj").write_text("garbage\n")
    with pytest.raises(MeterReadError, match="intel-rapl:2"):
        m.read()


def test_status_has_no_fields_for_rapl(powercap: Path) -> None:
    statuses = RaplMeter(powercap).status()
    assert [s.device_id for s in statuses] == ["intel-rapl:0", "intel-rapl:2", "intel-rapl:10"]
    assert all(s.power_w is None and s.utilization is None for s in statuses)
