"""ReplayMeter: the v1 trace format, its errors by line, and deterministic playback."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.errors import ConfigError, ReplayFormatError
from sidecar.meters import make_meter
from sidecar.meters.base import MAX_DEVICE_W, DeviceStatus, EnergyMeter, EnergySource, Reading
from sidecar.meters.replay import ReplayMeter
from tests.support import FakeClock

HEADER = (
    "t_s,device,energy_j,power_w,utilization,sm_clock_mhz,memory_used_bytes,power_avg_w,phase,poll_cost_s"
)

TRACE = f"""# jouletrace replay trace v1
# gpu: NVIDIA H200; driver: 570.124.06
{HEADER}
10.000000,GPU-a,1000.0,75.20,0.00,345,1234567,74.9,idle,0.000412
10.000000,GPU-b,2000.0,80.00,0.10,400,2000000,79.0,idle,0.000400

10.100000,GPU-a,1010.0,,0.50,1980,,74.9,decode,0.000401
10.200000,GPU-b,2030.0,300.0,1.00,1980,3000000,250.0,decode,0.000402
10.300000,GPU-a,1040.0,310.0,1.00,1980,3000000,260.0,decode,0.000399
10.300000,GPU-b,2060.0,305.0,1.00,1980,3000000,255.0,decode,0.000398
"""


def write(tmp_path: Path, text: str, name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_header_comments_devices_and_polls_are_parsed(tmp_path: Path) -> None:
    m = ReplayMeter(write(tmp_path, TRACE), clock=FakeClock())
    assert isinstance(m, EnergyMeter)
    assert m.source is EnergySource.REPLAY
    assert [d.id for d in m.devices] == ["GPU-a", "GPU-b"]
    assert m.comments == ("jouletrace replay trace v1", "gpu: NVIDIA H200; driver: 570.124.06")
    assert m.duration_s == pytest.approx(0.3)
    assert list(m.readings()) == [  # equal t_s = one poll; a device absent from a poll carries forward
        Reading(t_s=10.0, energy_j=(1000.0, 2000.0)),
        Reading(t_s=10.1, energy_j=(1010.0, 2000.0)),
        Reading(t_s=10.2, energy_j=(1010.0, 2030.0)),
        Reading(t_s=10.3, energy_j=(1040.0, 2060.0)),
    ]


def test_status_columns_are_parsed_empty_cells_are_unknown_and_others_ignored(tmp_path: Path) -> None:
    m = ReplayMeter(write(tmp_path, TRACE), clock=FakeClock())
    statuses = list(m.statuses())
    assert statuses[0][0] == DeviceStatus("GPU-a", 75.2, 0.0, 345.0, 1234567.0, None)
    assert statuses[1][0] == DeviceStatus("GPU-a", None, 0.5, 1980.0, None, None)
    assert statuses[1][1] == statuses[0][1]  # GPU-b absent at 10.1: its last status carries forward


def test_a_device_before_its_first_row_shows_its_first_value(tmp_path: Path) -> None:
    text = "t_s,device,energy_j\n0,GPU-a,5\n1,GPU-a,6\n1,GPU-b,70\n2,GPU-b,71\n"
    m = ReplayMeter(write(tmp_path, text), clock=FakeClock())
    assert [r.energy_j for r in m.readings()] == [(5.0, 70.0), (6.0, 70.0), (6.0, 71.0)]
    assert next(m.statuses())[1] == DeviceStatus("GPU-b")


def test_a_trace_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Adversarial probe: a spreadsheet's "CSV UTF-8" (with a BOM) was refused: no column t_s."""
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + TRACE.encode())
    m = ReplayMeter(path, clock=FakeClock())
    assert [r.energy_j for r in m.readings()] == [
        r.energy_j for r in ReplayMeter(write(tmp_path, TRACE)).readings()
    ]


@pytest.mark.parametrize("speed", [1.0, 60.0, 0.5])
def test_a_trace_played_faster_may_show_as_much_more_power(tmp_path: Path, speed: float) -> None:
    m = ReplayMeter(write(tmp_path, TRACE), clock=FakeClock(), speed=speed)
    assert {d.max_w for d in m.devices} == {MAX_DEVICE_W * speed}  # the timeline's bad-read bound


@pytest.mark.parametrize("speed", [1.0, 2.0, 0.5])
def test_playback_follows_the_clock_times_speed(tmp_path: Path, speed: float) -> None:
    clock = FakeClock(500.0)
    m = ReplayMeter(write(tmp_path, TRACE), clock=clock, speed=speed)
    expectations = [(0.0, 0), (0.05, 0), (0.1, 1), (0.15, 1), (0.2, 2), (0.299, 2), (0.3, 3), (9.0, 3)]
    polls = list(m.readings())
    for trace_dt, index in expectations:
        clock.t_s = 500.0 + trace_dt / speed
        reading = m.read()
        assert reading.energy_j == polls[index].energy_j, (trace_dt, speed)
        assert reading.t_s == pytest.approx(500.0 + (polls[index].t_s - 10.0) / speed)
        assert m.status() == list(m.statuses())[index]
        assert m.exhausted is (index == 3)


def test_speed_and_path_errors_name_their_knob(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="replay_speed"):
        ReplayMeter(write(tmp_path, TRACE), speed=0.0)
    with pytest.raises(ConfigError, match="replay_path"):
        ReplayMeter(tmp_path / "missing.csv")


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("", 1, "empty file"),
        ("# only a comment\n\n", 3, "empty file"),
        ("t_s,device,energy_j\n", 2, "no data rows"),
        ("# c\nt_s,energy_j,power_w\n0,1,2\n", 2, "lacks required column(s) device"),
        ("t_s,device,energy_j\n0,GPU-a,12.5\n0.1,GPU-a,abc\n", 3, "column energy_j: 'abc' is not a finite"),
        ("t_s,device,energy_j\n0,GPU-a,nan\n", 2, "column energy_j: 'nan'"),
        ("t_s,device,energy_j,power_w\n0,GPU-a,1,7W\n", 2, "column power_w: '7W'"),
        ("t_s,device,energy_j\n1,GPU-a,1\n2,GPU-a,2\n\n1.5,GPU-a,3\n", 5, "t_s goes backwards"),
        ("t_s,device,energy_j\n1,GPU-a,1\n1,GPU-a,2\n", 3, "device 'GPU-a' twice"),
        ("t_s,device,energy_j\n1,GPU-a\n", 2, "2 cells, the header has 3"),
        ("t_s,device,energy_j\n1,,5\n", 2, "column device is empty"),
        ("t_s,device,energy_j,utilization\n1,GPU-a,5,42\n", 2, "outside 0..1"),
        ("t_s,device,t_s,energy_j\n", 1, "repeats column(s) t_s"),
        ("# jouletrace replay trace v2\nt_s,device,energy_j\n1,a,1\n", 1, "unsupported trace version"),
    ],
)
def test_a_malformed_file_names_the_file_line_and_problem(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ReplayFormatError) as info:
        ReplayMeter(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert problem in message


def test_a_malformed_file_given_as_the_meter_names_the_knob_too(tmp_path: Path) -> None:
    """Probe 12: ``--meter replay --replay-path /etc/passwd`` named the file, not ``replay_path``."""
    path = write(tmp_path, "root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(ReplayFormatError) as info:
        make_meter("replay", replay_path=path)
    assert str(info.value).startswith(f"replay_path: {path}:1: header lacks required column(s)")


polls = st.lists(
    st.tuples(
        st.integers(min_value=1_000, max_value=500_000),  # gap to the previous poll, µs
        st.dictionaries(
            st.sampled_from(["GPU-a", "GPU-b", "GPU-c"]),
            st.floats(min_value=0, max_value=1e9, allow_nan=False),
            min_size=1,
        ),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(
    trace=polls,
    speed=st.sampled_from([0.25, 1.0, 3.0]),
    probes=st.lists(st.tuples(st.integers(0, 40), st.sampled_from([0.0, 0.01, 0.5, 0.99])), max_size=10),
)
def test_read_at_any_clock_time_returns_the_files_values_of_the_latest_poll(
    trace: list[tuple[int, dict[str, float]]], speed: float, probes: list[tuple[int, float]]
) -> None:
    times, lines, t_us = [], [HEADER], 7_000_000
    for gap_us, values in trace:
        t_us += gap_us
        times.append(t_us / 1e6)
        lines += [f"{t_us / 1e6:.6f},{dev},{energy!r},,,,,,," for dev, energy in values.items()]
    expected, carried = [], {}  # the oracle: carry each device's last value forward, first value back
    first = {dev: e for _, values in reversed(trace) for dev, e in values.items()}
    order = list(dict.fromkeys(dev for _, values in trace for dev in values))
    for _, values in trace:
        carried.update(values)
        expected.append(tuple(carried.get(dev, first[dev]) for dev in order))
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), "\n".join(lines) + "\n")
        clock = FakeClock(123.0)
        m = ReplayMeter(path, clock=clock, speed=speed)
    assert [r.energy_j for r in m.readings()] == expected
    for index, fraction in probes:
        k = min(index, len(times) - 1)
        nxt = times[k + 1] if k + 1 < len(times) else times[k] + 1.0
        clock.t_s = 123.0 + (times[k] + fraction * (nxt - times[k]) - times[0]) / speed
        reading = m.read()
        assert reading.energy_j == expected[k]
        assert reading.t_s == pytest.approx(123.0 + (times[k] - times[0]) / speed)
        assert m.exhausted is (k == len(times) - 1)


def test_next_change_is_when_the_next_poll_plays_and_never_after_the_last(tmp_path: Path) -> None:
    clock = FakeClock(500.0)
    m = ReplayMeter(write(tmp_path, TRACE), clock=clock, speed=2.0)
    assert m.next_change_s() == pytest.approx(500.05)  # the poll at 10.1, played at double speed
    clock.t_s = 500.05
    before = m.read()
    assert m.next_change_s() == pytest.approx(500.1)
    clock.t_s = 500.1 - 1e-6  # just before the change: what read() returns has not changed
    assert m.read() == before
    clock.t_s = 500.15
    assert m.next_change_s() == float("inf")
