"""Hostile /metrics targets: huge, endless, trickling pages and pages of other series (a real HTTP server)."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator
from io import BufferedIOBase

import pytest

from sidecar.taps.vllm_metrics import MetricsScraper, parse_metrics
from sidecar.taps.vllm_metrics_page import MAX_PAGE_BYTES, MAX_SAMPLES, PageTooLarge

GOOD = (
    'vllm:prompt_tokens_total{engine="0"} 100\nvllm:generation_tokens_total{engine="0"} 200\n'
    'vllm:num_requests_running{engine="0"} 3\n'
)


def junk(series: int) -> str:
    """Valid exposition text of ``series`` series the scraper does not read."""
    return "# TYPE junk gauge\n" + "".join(f'junk{{a="{i}",b="{"x" * 20}"}} {i}\n' for i in range(series))


class Target:
    """A vLLM /metrics stand-in whose ``mode`` is ``good``, ``page`` (``body``), ``endless``,
    ``declared`` (a Content-Length over the cap) or ``drip`` (a byte every 0.1 s)."""

    def __init__(self) -> None:
        self.mode = "good"
        self.body = GOOD.encode()
        self.stop = threading.Event()
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mode = target.mode
                self.send_response(200)
                if mode == "declared":
                    self.send_header("Content-Length", str(MAX_PAGE_BYTES + 1))
                self.end_headers()
                with contextlib.suppress(OSError):  # the scraper hung up: what it is meant to do
                    target.write(mode, self.wfile)

            def log_message(self, *args: object) -> None: ...

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def write(self, mode: str, out: BufferedIOBase) -> None:
        write = out.write
        if mode in ("endless", "drip"):
            while not self.stop.is_set() and self.mode == mode:
                write(b"#" if mode == "drip" else b"# " + b"x" * 65536 + b"\n")
                time.sleep(0.1 if mode == "drip" else 0)
        elif mode == "declared":
            write(GOOD.encode())
        else:
            write(self.body if mode == "page" else GOOD.encode())


@pytest.fixture
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.stop.set()
    t.server.shutdown()
    t.server.server_close()


def scrape_until(s: MetricsScraper, done: Callable[[], bool], limit_s: float = 6.0) -> float:
    """Call ``due`` as the tick does until ``done()``; the longest call (s)."""
    worst = 0.0
    t0 = time.monotonic()
    while not done() and time.monotonic() - t0 < limit_s:
        t = time.monotonic()
        s.due(0.0)
        worst = max(worst, time.monotonic() - t)
        time.sleep(0.01)
    return worst


@pytest.mark.parametrize("mode", ["endless", "declared", "page"])
def test_a_page_over_the_byte_cap_is_refused_whole_and_counted(target: Target, mode: str) -> None:
    target.mode = mode
    target.body = (GOOD + junk(MAX_PAGE_BYTES // 40)).encode()  # the good lines first, then over the cap
    s = MetricsScraper(target.url, interval_s=0.05, timeout_s=5.0)
    s.start()
    try:
        t0 = time.monotonic()
        scrape_until(s, lambda: s.counts["too_large"] >= 2)
        assert s.counts["too_large"] >= 2 and s.counts["scrapes"] == 0 and s.latest == {}
        assert time.monotonic() - t0 < 5.0  # refused as it came, not after reading until the deadline
    finally:
        s.stop()


def test_a_valid_page_of_many_other_series_is_read_off_the_tick(target: Target) -> None:
    target.mode = "page"
    target.body = (junk(60_000) + GOOD).encode()  # ~2.6 MB, under the cap
    assert len(target.body) < MAX_PAGE_BYTES
    s = MetricsScraper(target.url, interval_s=0.05, timeout_s=5.0)
    s.start()
    try:
        worst_s = scrape_until(s, lambda: s.counts["scrapes"] >= 3)
        assert s.counts["scrapes"] >= 3 and s.latest == {"prompt": 100, "generation": 200, "running": 3}
        # parsing the page, 60,000 series, is not the tick's work (a call took 2.2 s when it was);
        # a wide bound: the worker's parse holds the interpreter a piece at a time, on a loaded CI box
        assert worst_s < 0.5
    finally:
        s.stop()


def test_lines_of_other_series_never_reach_the_parser() -> None:
    broken = "# TYPE junk histogram\njunk_bucket{le=nope} x y z\n\x00\xff{{{\n"
    assert parse_metrics(broken + GOOD + broken) == {"prompt": 100, "generation": 200, "running": 3}


def test_a_page_with_none_of_vllms_samples_or_too_many_is_refused() -> None:
    with pytest.raises(ValueError, match="no sample"):
        parse_metrics(junk(10))
    with pytest.raises(PageTooLarge) as err:
        parse_metrics('vllm:num_requests_running{engine="e"} 1\n' * (MAX_SAMPLES + 1))
    assert err.value.reason == "too_many_samples"


def test_a_trickling_target_times_out_as_a_whole_and_scraping_recovers(target: Target) -> None:
    s = MetricsScraper(target.url, interval_s=0.05, timeout_s=0.5)
    s.start()
    try:
        scrape_until(s, lambda: s.counts["scrapes"] >= 1)
        assert s.latest["running"] == 3
        target.mode = "drip"  # a byte every 0.1 s: each socket read is quick, the page never ends
        worst_s = scrape_until(s, lambda: s.counts["timeouts"] >= 3)
        assert s.counts["timeouts"] >= 3 and worst_s < 0.05
        assert "running" not in s.latest  # vLLM's load is unknown now, not what it last was
        target.mode = "good"
        scrapes = s.counts["scrapes"]
        scrape_until(s, lambda: s.counts["scrapes"] > scrapes)
        assert s.counts["scrapes"] > scrapes and s.latest["running"] == 3
    finally:
        s.stop()


def test_a_scrape_held_by_trickled_header_lines_is_counted_overdue() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:  # a header line that never ends, a byte every 0.1 s
        conn, _ = server.accept()
        with conn, contextlib.suppress(OSError):
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not stop.wait(0.1):
                conn.sendall(b"a")

    threading.Thread(target=trickle, daemon=True).start()
    s = MetricsScraper(f"http://127.0.0.1:{server.getsockname()[1]}/metrics", interval_s=0.05, timeout_s=0.4)
    s.start()
    try:
        worst_s = scrape_until(s, lambda: s.counts["overdue"] >= 1, limit_s=4.0)
        assert s.counts["overdue"] == 1 and worst_s < 0.05
    finally:
        stop.set()
        s.stop()
        server.close()
