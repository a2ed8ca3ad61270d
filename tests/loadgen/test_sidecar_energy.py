"""The loadgen's reads of the sidecar: /v1/energy (the real API over a real timeline), device names."""

from __future__ import annotations

import aiohttp
import pytest

from loadgen.sidecar_energy import (
    MAX_SERIES_POINTS,
    device_names,
    energy_grid,
    fetch_energy_series,
    fetch_interval_energy,
)
from sidecar.export.api import make_app, serve, timeline_energy
from sidecar.meters.base import DeviceInfo, Reading
from sidecar.timeline import Timeline

EXPOSITION = """# HELP hw_energy_joules_total Energy
# TYPE hw_energy_joules_total counter
hw_energy_joules_total{hw_id="gpu-0",hw_name="NVIDIA H100 80GB HBM3",hw_type="gpu"} 12.5
hw_energy_joules_total{hw_id="gpu-1",hw_name="NVIDIA H100 80GB HBM3",hw_type="gpu"} 10.0
"""


def test_device_names_are_read_from_the_energy_counters_labels() -> None:
    assert device_names(EXPOSITION) == ["NVIDIA H100 80GB HBM3"]
    assert device_names("") == []


async def test_interval_energy_is_read_and_an_uncovered_interval_gives_up_with_a_reason() -> None:
    timeline = Timeline([DeviceInfo("cpu", "cpu-model estimate", "cpu")])
    for k in range(51):
        timeline.add(Reading(0.1 * k, (20.0 * 0.1 * k,)))
    query = timeline_energy(timeline, clock=lambda: 5.0, wall=lambda: 1005.0)  # unix = monotonic + 1000
    served = await serve(make_app(metrics=lambda: b"", lookup=lambda _: None, ready=lambda: (True, ""),
                                  energy=query), "127.0.0.1", 0)  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            energy, note = await fetch_interval_energy(session, served.url, 1001.0, 1003.0)
            assert note == "" and energy is not None and abs(energy - 40.0) < 1e-6
            energy, note = await fetch_interval_energy(session, served.url, 1004.0, 1009.0, wait_s=0.3)
            assert energy is None and "does not cover" in note
    finally:
        await served.close()


async def test_a_sidecar_without_the_endpoint_is_named() -> None:
    served = await serve(make_app(metrics=lambda: b"", lookup=lambda _: None, ready=lambda: (True, "")),
                         "127.0.0.1", 0)  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            energy, note = await fetch_interval_energy(session, served.url, 1.0, 2.0)
        assert energy is None and "no /v1/energy" in note
    finally:
        await served.close()


def test_the_grid_is_regular_includes_both_ends_and_is_capped() -> None:
    assert energy_grid(1.0, 2.0, 0.25) == [1.0, 1.25, 1.5, 1.75, 2.0]
    assert energy_grid(3.0, 3.0, 0.2) == [3.0]
    long = energy_grid(0.0, 1e5, 0.2)
    assert len(long) == MAX_SERIES_POINTS and long[-1] == 1e5


async def test_the_energy_series_is_read_from_the_timeline_on_the_runs_clock() -> None:
    timeline = Timeline([DeviceInfo("cpu", "cpu-model estimate", "cpu")])
    for k in range(51):  # 20 W for 5 s, monotonic 0..5
        timeline.add(Reading(0.1 * k, (20.0 * 0.1 * k,)))
    query = timeline_energy(timeline, clock=lambda: 5.0, wall=lambda: 1005.0)  # unix = monotonic + 1000
    served = await serve(make_app(metrics=lambda: b"", lookup=lambda _: None, ready=lambda: (True, ""),
                                  energy=query), "127.0.0.1", 0)  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:  # the run's t0 is unix 1001
            series, note = await fetch_energy_series(session, served.url, 1001.0, [0.5, 1.0, 2.0])
            assert note == "" and series is not None
            assert [t for t, _ in series] == [0.5, 1.0, 2.0]
            assert [e for _, e in series] == pytest.approx([0.0, 10.0, 30.0])
            series, note = await fetch_energy_series(session, served.url, 1001.0, [0.5, 9.0], wait_s=0.3)
            assert series is None and "does not cover" in note
    finally:
        await served.close()
