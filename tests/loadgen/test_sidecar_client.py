"""Reading the sidecar's /metrics: device energy and idle energy from a real exposition."""

from __future__ import annotations

import re
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from loadgen.sidecar_client import EnergySampler, parse_energy, parse_idle
from tests.loadgen.fake_server import serving

# The sidecar exporter's own output (its golden file: two devices, an idle series, the lag gauge).
GOLDEN = (Path(__file__).parents[1] / "sidecar" / "export" / "golden_metrics.txt").read_text()


def test_device_energy_is_the_sum_over_every_device_series() -> None:
    assert parse_energy(GOLDEN) == pytest.approx(152000.25 + 148500.0)


def test_idle_energy_comes_with_the_attribution_lag() -> None:
    assert parse_idle(GOLDEN) == pytest.approx((41000.0, 0.25))


def test_a_metric_whose_name_only_starts_like_the_energy_counter_is_not_counted() -> None:
    text = "# TYPE hw_energy_joules_total_extra counter\nhw_energy_joules_total_extra 5.0\n"
    assert parse_energy(text) is None


def test_only_the_phase_label_itself_selects_the_idle_series() -> None:
    text = (
        'gen_ai_server_energy_joules_total{xjouletrace_phase="idle",jouletrace_phase="decode"} 7.0\n'
        "jouletrace_attribution_lag_seconds 0.1\n"
    )
    assert parse_idle(text) is None


@pytest.mark.parametrize("text", ["", "<html>502 Bad Gateway</html>", "hw_energy_joules_total{broken 1\n"])
def test_an_absent_or_unparseable_exposition_reads_as_no_energy(text: str) -> None:
    assert parse_energy(text) is None and parse_idle(text) is None


async def test_the_closing_scrape_is_tried_again_until_the_sidecar_answers() -> None:
    """A loaded sidecar may fail a scrape; the one that ends the idle series is retried."""

    answers = iter([web.Response(status=503), web.Response(status=503)])

    async def metrics(_: web.Request) -> web.Response:
        return next(answers, None) or web.Response(text=GOLDEN, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    async with serving(app) as url, aiohttp.ClientSession() as session:
        sampler = EnergySampler(url=url, t0=time.perf_counter())
        assert await sampler.close(session, attempts=3)
    assert sampler.errors == 2
    assert len(sampler.samples) == 1 and len(sampler.idle_samples) == 1
    assert sampler.idle_samples[0][1] == pytest.approx(41000.0)


async def test_the_closing_scrape_is_taken_again_while_its_idle_is_dated_before_the_last_end() -> None:
    """A page is a snapshot of a moment before the scrape (a tick, more where rendering is dear):
    the conservation bracket needs an idle reading sealed past the last request's end."""
    lags = iter(["100.0", "50.0"])  # sealed long before the scrape, then again, then just now

    async def metrics(_: web.Request) -> web.Response:
        lag = next(lags, "0.0")
        text, n = re.subn(
            r"^(jouletrace_attribution_lag_seconds\{.*\}) 0\.25$", rf"\1 {lag}", GOLDEN, flags=re.M
        )
        assert n == 1
        return web.Response(text=text, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    async with serving(app) as url, aiohttp.ClientSession() as session:
        sampler = EnergySampler(url=url, t0=time.perf_counter(), interval_s=0.01)
        assert await sampler.close(session, past_s=0.0)
        assert len(sampler.samples) == 3 and sampler.idle_samples[-1][0] >= 0.0 and sampler.errors == 0
        never = EnergySampler(url=url, t0=time.perf_counter() + 1e6, interval_s=0.01)  # the end never reached
        assert not await never.close(session, past_s=0.0, wait_s=0.05)
