"""/metrics over HTTP: rendered once per snapshot, at most a tenth of the wall time; off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request

import pytest

from sidecar.export.api import make_app, serve
from sidecar.export.metrics_cache import RenderCache
from tests.support import FakeClock


def test_the_text_is_made_again_only_for_another_snapshot_and_not_within_ten_times_its_cost() -> None:
    clock, snapshot, made, cost_s = FakeClock(0.0), [object()], [], [0.1]

    def render() -> bytes:
        made.append(snapshot[0])
        clock.t_s += cost_s[0]  # the render's own time
        return f"render {len(made)}".encode()

    cache = RenderCache(render, lambda: snapshot[0], max_share=0.1, clock=clock)
    assert cache() == b"render 1" and cache() == b"render 1"  # the same snapshot: the same bytes
    clock.t_s = 5.0
    assert cache() == b"render 1"  # time alone does not make it again
    snapshot[0] = object()  # a tick ran
    assert cache() == b"render 2"  # began at 5.0, took 0.1 s: not again before 6.0
    snapshot[0] = object()
    clock.t_s = 5.9  # a tenth of the wall time at most: the bytes of 0.9 s ago
    assert cache() == b"render 2" and cache.renders == 2
    clock.t_s, cost_s[0] = 6.0, 0.002
    assert cache() == b"render 3" and len(made) == 3
    snapshot[0] = object()  # a cheap render (2 ms) may be made again 20 ms after it began
    clock.t_s = 6.019
    assert cache() == b"render 3"
    clock.t_s = 6.021
    assert cache() == b"render 4" and made[-1] is snapshot[0]


def test_a_share_outside_0_to_1_is_refused() -> None:
    for share in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="max_share"):
            RenderCache(lambda: b"", object, max_share=share)


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
