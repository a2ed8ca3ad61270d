"""What the loadgen reads back from the sidecar, and the run's own settings, taken as hostile."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from loadgen.analysis import Window, energy_in
from loadgen.arrivals import constant, poisson
from loadgen.config import RunConfig
from loadgen.errors import InputError
from loadgen.records import Request, Result, finite_j
from loadgen.report import _finite
from loadgen.run_energy import read_energy
from loadgen.sidecar_client import EnergySampler, fetch_records
from loadgen.sidecar_energy import fetch_interval_energy
from loadgen.tasks import scale_task
from tests.loadgen.fake_server import serving


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -50.0, True, "5", None, pytest.param(10**400, id="int-past-1e308")]
)
def test_an_energy_that_is_no_energy_reads_as_none(value: Any) -> None:
    assert finite_j(value) is None


@pytest.mark.parametrize("value", [0, 5, 2.5])
def test_a_finite_energy_reads_as_itself(value: float) -> None:
    assert finite_j(value) == value


def _result(rid: str) -> Result:
    req = Request(id=rid, task="gpqa", api="chat", path="/v1/chat/completions", body={})
    return Result(request=req, target_s=0.0, finished_s=1.0)


async def _fetch(records: dict[str, Any], results: list[Result]) -> None:
    async def record(request: web.Request) -> web.Response:
        body = records.get(request.match_info["rid"])
        return web.json_response(body) if body is not None else web.json_response({}, status=404)

    app = web.Application()
    app.router.add_get("/v1/requests/{rid}", record)
    async with serving(app) as url, aiohttp.ClientSession() as session:
        await fetch_records(session, url, results, wait_s=0.5, poll_s=0.05, label_wait_s=0.0)


def test_a_record_that_is_not_an_object_is_a_failed_read_and_costs_no_other() -> None:
    """Before: ``last.get`` on a list raised out of the run after every request was sent."""
    results = [_result("list"), _result("text"), _result("good")]
    good = {"final": True, "task": "gpqa", "energy_j": 3.0}
    asyncio.run(_fetch({"list": [1, 2], "text": "final", "good": good}, results))
    assert [r.energy for r in results] == [None, None, good]
    assert results[0].energy_note is not None and "no record" in results[0].energy_note


@pytest.mark.parametrize("energy", ["NaN", "Infinity", "-5", "true"])
def test_an_interval_energy_that_is_no_energy_is_not_taken(energy: str) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(
            text=f'{{"energy_j": {energy}, "covered": true}}', content_type="application/json"
        )

    async def fetch() -> tuple[float | None, str]:
        app = web.Application()
        app.router.add_get("/v1/energy", answer)
        async with serving(app) as url, aiohttp.ClientSession() as session:
            return await fetch_interval_energy(session, url, 1.0, 2.0, wait_s=0.2, poll_s=0.05)

    value, note = asyncio.run(fetch())
    assert value is None and note


def test_a_metrics_page_without_the_idle_series_ends_the_run_without_idle() -> None:
    """Before: ``min(x, *())`` raised TypeError after every request was sent."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="# TYPE hw_energy_joules_total counter\nhw_energy_joules_total 42.0\n")

    async def run() -> list[tuple[float, float]]:
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        async with serving(app) as url, aiohttp.ClientSession() as session:
            sampler = EnergySampler(url, t0=0.0)
            for _ in range(2):
                await sampler.sample_once(session)
            out = await read_energy(session, url, sampler, [], 0.0, step_s=0.2, wait_s=0.2)
            return out.samples

    assert len(asyncio.run(run())) >= 2


def test_a_prefill_energy_that_is_not_a_number_is_none() -> None:
    r = _result("r")
    r.first_token_s, r.output_tokens, r.output_units = 0.5, 4, 4.0
    r.chunk_s, r.chunk_tokens = [0.5, 0.6, 0.7, 0.8], [1.0] * 4
    r.energy = {"energy_j": 10.0, "phase_j": {"prefill": "n/a"}}
    assert energy_in(r, Window(0.0, 2.0, "full-run")) == pytest.approx(10.0)


def test_the_results_file_holds_no_number_json_cannot_read() -> None:
    assert _finite({"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": "x"}) == {
        "a": None,
        "b": [1.0, None, {"c": None}],
        "d": "x",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout_s", 0.0),
        ("timeout_s", -1.0),
        ("timeout_s", math.nan),
        ("timeout_s", math.inf),
        ("scrape_interval_s", 0.0),
        ("scrape_interval_s", math.nan),
        ("energy_wait_s", -1.0),
        ("min_window_s", math.nan),
        ("scale", math.nan),
        ("scale", 0.0),
        ("prompt_scale", math.inf),
        ("requests", 0),
        ("requests", -3),
        ("seed", -1),
        ("batch_cap", 0),
        ("max_model_len", 0),
    ],
)
def test_a_setting_out_of_range_is_refused_naming_its_flag(field: str, value: float) -> None:
    with pytest.raises(InputError, match=f"--{field.replace('_', '-')}: must be"):
        RunConfig(**{field: value})


def test_the_default_settings_stand() -> None:
    assert RunConfig().timeout_s == 600.0


@pytest.mark.parametrize("rate", [math.nan, math.inf, 0.0])
def test_an_arrival_rate_that_is_not_a_finite_number_is_refused(rate: float) -> None:
    with pytest.raises(InputError, match="arrival rate"):
        poisson(3, rate, 0)
    with pytest.raises(InputError, match="arrival rate"):
        constant(3, rate)


def test_a_scale_that_is_not_a_finite_number_is_refused() -> None:
    from loadgen.tasks import load_tasks

    spec = next(iter(load_tasks().values()))
    with pytest.raises(InputError, match="--scale"):
        scale_task(spec, math.nan)
