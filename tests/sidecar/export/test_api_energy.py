"""GET /v1/energy on a real socket, over a real Timeline: energy between two Unix times, and bad bounds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sidecar.export.api import ENERGY_REJECTED, Served, make_app, serve, timeline_energy
from sidecar.meters.base import DeviceInfo, Reading
from sidecar.timeline import Timeline

WALL_OFFSET_S = 1_700_000_000.0  # Unix time = monotonic time + this, in these tests
POWER_W = 100.0


def _timeline() -> Timeline:
    """One device drawing 100 W, polled every 0.1 s from monotonic 10 s to 20 s (edges at every poll)."""
    timeline = Timeline([DeviceInfo("gpu-0", "NVIDIA H100 80GB HBM3")])
    for k in range(101):
        t = 10.0 + 0.1 * k
        timeline.add(Reading(t, (POWER_W * t,)))
    return timeline


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    query = timeline_energy(_timeline(), clock=lambda: 30.0, wall=lambda: 30.0 + WALL_OFFSET_S)
    app = make_app(metrics=lambda: b"", lookup=lambda _: None, ready=lambda: (True, ""), energy=query)
    server = await serve(app, "127.0.0.1", 0)
    yield server
    await server.close()


async def get(served: Served, query: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{served.url}/v1/energy?{query}") as resp:
        return resp.status, json.loads(await resp.read())


async def test_energy_over_an_interval_is_the_counter_difference(served: Served) -> None:
    start, end = WALL_OFFSET_S + 12.25, WALL_OFFSET_S + 15.0
    status, body = await get(served, f"start_unix_s={start}&end_unix_s={end}")
    assert status == 200
    assert body["energy_j"] == pytest.approx(POWER_W * 2.75, rel=1e-6)
    assert body["covered"] is True
    assert body["devices"] == ["gpu-0"]
    assert body["newest_update_unix_s"] == pytest.approx(WALL_OFFSET_S + 20.0, abs=0.1)


async def test_an_interval_past_the_newest_update_is_not_covered(served: Served) -> None:
    start, end = WALL_OFFSET_S + 19.0, WALL_OFFSET_S + 21.0
    status, body = await get(served, f"start_unix_s={start}&end_unix_s={end}")
    assert status == 200
    assert body["covered"] is False
    assert body["energy_j"] <= POWER_W * 1.0 + 1e-6  # nothing invented past the newest update


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("end_unix_s=5", "start_unix_s"),
        ("start_unix_s=5", "end_unix_s"),
        ("start_unix_s=abc&end_unix_s=5", "start_unix_s"),
        ("start_unix_s=nan&end_unix_s=5", "start_unix_s"),
        ("start_unix_s=1&end_unix_s=inf", "end_unix_s"),
        ("start_unix_s=-1&end_unix_s=5", "start_unix_s"),
        ("start_unix_s=10&end_unix_s=5", "end_unix_s"),
        ("start_unix_s=0&end_unix_s=1e9", "end_unix_s"),
    ],
)
async def test_bad_bounds_are_refused_naming_the_parameter_and_counted(
    served: Served, query: str, param: str
) -> None:
    status, body = await get(served, query)
    assert status == 400
    assert body["param"] == param
    assert param in body["error"]
    assert served.runner.app[ENERGY_REJECTED] == [1]


async def test_a_good_query_after_a_bad_one_is_still_answered(served: Served) -> None:
    assert (await get(served, "start_unix_s=x&end_unix_s=1"))[0] == 400
    status, body = await get(served, f"start_unix_s={WALL_OFFSET_S + 11}&end_unix_s={WALL_OFFSET_S + 12}")
    assert status == 200
    assert body["energy_j"] == pytest.approx(POWER_W, rel=1e-6)


async def test_without_an_energy_callable_the_route_is_not_served() -> None:
    app = make_app(metrics=lambda: b"", lookup=lambda _: None, ready=lambda: (True, ""))
    server = await serve(app, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{server.url}/v1/energy") as resp:
            assert resp.status == 404
    finally:
        await server.close()
