"""/metrics over HTTP: made once per snapshot, within a CPU budget (a tenth, after a burst); off the loop."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request

import pytest

from sidecar.export.api import make_app, serve
from sidecar.export.metrics_cache import RenderCache
from tests.support import FakeClock


def test_the_text_is_made_again_only_for_another_snapshot_and_while_the_budget_lasts() -> None:
    clock, snapshot, made, cost_s = FakeClock(0.0), [object()], [], [0.4]

    def render() -> bytes:
        made.append(snapshot[0])
        clock.t_s += cost_s[0]  # the render's own time (the fake counts it as CPU and wall alike)
        return f"render {len(made)}".encode()

    cache = RenderCache(render, lambda: snapshot[0], max_share=0.1, burst_s=1.0, clock=clock, cpu_clock=clock)
    assert cache() == b"render 1" and cache() == b"render 1"  # the same snapshot: the same bytes
    clock.t_s = 5.0
    assert cache() == b"render 1"  # time alone does not make it again
    for n in (2, 3):  # a burst: fresh pages while the budget lasts (1.0 - 0.4 - 0.04 - 0.4 = 0.24 s left)
        snapshot[0] = object()
        assert cache() == f"render {n}".encode()
    snapshot[0] = object()
    assert cache() == b"render 4"  # 0.24 s left (+ 0.04 refilled): made, and now 0.12 s in debt
    snapshot[0] = object()
    clock.t_s += 0.5  # 0.09 s refilled (a tenth of 0.9 s): 0.03 s in debt, the bytes of half a second ago
    assert cache() == b"render 4" and cache.renders == 4
    clock.t_s += 0.5  # 0.05 s more: out of debt, the latest snapshot
    assert cache() == b"render 5" and made[-1] is snapshot[0]


def test_a_scraper_at_a_sane_rate_always_gets_the_latest_snapshot() -> None:
    """A CI run was served a page seconds old (reuse grew with a loaded box's wall render time)."""
    clock, snapshot = FakeClock(0.0), [object()]
    cpu_s = [0.0]

    def render() -> bytes:
        clock.t_s += 0.5  # a loaded box: the render waits for the cores half a second of wall time
        cpu_s[0] += 0.01  # of which it ran 10 ms
        return repr(snapshot[0]).encode()

    cache = RenderCache(render, lambda: snapshot[0], clock=clock, cpu_clock=lambda: cpu_s[0])
    for _ in range(200):  # the load generator's scrapes, 0.2 s apart, a tick between each
        snapshot[0] = object()
        clock.t_s += 0.2
        assert cache() == repr(snapshot[0]).encode()
    assert cache.renders == 200


def test_a_flood_of_scrapes_gets_at_most_a_tenth_of_the_cpu_after_the_burst() -> None:
    clock, snapshot = FakeClock(0.0), [object()]

    def render() -> bytes:
        clock.t_s += 0.1
        return b"page"

    cache = RenderCache(render, lambda: snapshot[0], clock=clock, cpu_clock=clock)
    while clock.t_s < 100.0:  # a new snapshot and a scrape every millisecond, for 100 s
        snapshot[0] = object()
        clock.t_s += 0.001
        cache()
    spent_s = cache.renders * 0.1
    assert spent_s <= 1.0 + 0.1 * clock.t_s + 0.1  # the burst, a tenth of the time, one render's debt
    assert spent_s >= 0.1 * clock.t_s - 0.2  # and no fewer: the budget is used


def test_a_share_outside_0_to_1_or_a_burst_not_positive_is_refused() -> None:
    for share in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="max_share"):
            RenderCache(lambda: b"", object, max_share=share)
    for burst_s in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="burst_s"):
            RenderCache(lambda: b"", object, burst_s=burst_s)


def test_healthz_answers_while_metrics_renders() -> None:
    """/metrics was rendered on the event loop: clients pipelining it held /healthz for minutes."""
    rendering, release, began = threading.Event(), threading.Event(), [0.0]

    def slow_metrics() -> bytes:
        began[0] = time.monotonic()
        rendering.set()
        release.wait(5.0)
        return b"# slow\n"

    async def main() -> tuple[float, bytes]:
        served = await serve(
            make_app(metrics=slow_metrics, lookup=lambda _: None, ready=lambda: (True, "")), "127.0.0.1", 0
        )
        try:
            url = f"http://127.0.0.1:{served.port}"
            scrape = asyncio.create_task(
                asyncio.to_thread(lambda: urllib.request.urlopen(url + "/metrics").read())
            )
            await asyncio.to_thread(rendering.wait, 5.0)
            await asyncio.to_thread(lambda: urllib.request.urlopen(url + "/healthz", timeout=9).read())
            took_s = time.monotonic() - began[0]  # from the render's start: the loop was held all of it
            release.set()
            return took_s, await scrape
        finally:
            release.set()
            await served.close()

    took_s, body = asyncio.run(main())
    assert took_s < 1.0 and body == b"# slow\n"
