"""The /metrics scraper: counter deltas, restarts, the plugin cross-check, hung scrapes."""

from __future__ import annotations

import http.server
import math
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from sidecar.taps.vllm_metrics import MetricsScraper, parse_metrics
from tests.support import free_port


def exposition(prompt: float, generation: float, iterations: float = 0, running: float = 2) -> str:
    return f"""# HELP vllm:prompt_tokens Number of prefill tokens processed.
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{{engine="0",model_name="m"}} {prompt}
vllm:prompt_tokens_created{{engine="0",model_name="m"}} 1.7e9
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{{engine="0",model_name="m"}} {generation}
# TYPE vllm:iteration_tokens_total histogram
vllm:iteration_tokens_total_bucket{{engine="0",le="+Inf",model_name="m"}} {iterations}
vllm:iteration_tokens_total_count{{engine="0",model_name="m"}} {iterations}
vllm:iteration_tokens_total_sum{{engine="0",model_name="m"}} {prompt + generation}
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="m"}} {running}
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="m"}} 0.5
"""


def test_the_exposition_is_read_by_sample_name_summed_over_engines() -> None:
    two = exposition(10, 5, 3) + exposition(1, 1, 1).replace('engine="0"', 'engine="1"').split("\n", 2)[2]
    values = parse_metrics(exposition(10, 5, 3))
    assert values == {"prompt": 10, "generation": 5, "iterations": 3, "running": 2, "kv_cache_usage": 0.5}
    assert parse_metrics(two)["prompt"] == 11


def test_counter_deltas_accumulate_and_a_vllm_restart_rebases_them() -> None:
    s = MetricsScraper("http://unused")
    s.ingest(exposition(100, 50, 10), 1.0, 1.1)
    s.ingest(exposition(130, 70, 14), 2.0, 2.1)
    assert s.totals == {"prompt": 30, "generation": 20, "iterations": 4}
    s.ingest(exposition(5, 2, 1), 3.0, 3.1)  # counters went back: vLLM restarted
    s.ingest(exposition(15, 12, 3), 4.0, 4.1)
    assert s.counts["restarts"] == 1 and s.totals == {"prompt": 40, "generation": 30, "iterations": 6}


def test_the_plugin_cross_check_reports_tokens_the_plugin_missed_on_quiet_scrapes_only() -> None:
    plugin = {"tokens": (0, 0)}
    s = MetricsScraper("http://unused", plugin_tokens=lambda unix_s: plugin["tokens"])
    s.ingest(exposition(100, 50), 1.0, 1.1)
    s._check()  # the baseline
    plugin["tokens"] = (30, 17)  # the plugin saw 3 generation tokens fewer than vLLM counted
    s.ingest(exposition(130, 70), 2.0, 2.1)
    s._check()
    assert s.mismatch == {"prefill": 0.0, "decode": 3.0}
    moving = iter([(40, 30), (41, 31)])  # an iteration was recorded during this scrape: skipped
    s.plugin_tokens = lambda unix_s: next(moving)
    s.ingest(exposition(999, 999), 3.0, 3.1)
    s._check()
    assert s.mismatch == {"prefill": 0.0, "decode": 3.0}


@pytest.fixture
def hanging_server() -> Iterator[int]:
    """Accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_scrape_that_hangs_times_out_off_the_loop_and_is_counted(hanging_server: int) -> None:
    s = MetricsScraper(f"http://127.0.0.1:{hanging_server}/metrics", interval_s=0.05, timeout_s=0.3)
    s.start()
    try:
        t0 = time.monotonic()
        worst = 0.0
        while s.counts["timeouts"] < 2 and time.monotonic() - t0 < 5:
            t = time.monotonic()
            s.due(0.0)
            worst = max(worst, time.monotonic() - t)
            time.sleep(0.02)
        assert s.counts["timeouts"] >= 2 and worst < 0.05  # due() never waits for the scrape
    finally:
        s.stop()


def test_a_refused_scrape_is_an_error_not_a_crash() -> None:
    port = free_port()  # nothing listens there
    s = MetricsScraper(f"http://127.0.0.1:{port}/metrics", interval_s=0.01, timeout_s=0.5)
    s.start()
    try:
        deadline = time.monotonic() + 3
        while s.counts["errors"] == 0 and time.monotonic() < deadline:
            s.due(0.0)
            time.sleep(0.01)
        assert s.counts["errors"] >= 1
    finally:
        s.stop()


@pytest.mark.parametrize(
    ("bad", "reason"), [("NaN", "not_finite"), ("+Inf", "not_finite"), ("-7", "negative")]
)
def test_a_poison_sample_is_skipped_and_counted_and_the_other_samples_are_used(bad: str, reason: str) -> None:
    s = MetricsScraper("http://127.0.0.1:1/metrics")
    s.ingest(exposition(10, 5, 3), 0.0, 0.0)
    poisoned = exposition(20, 9, 5).replace(
        'generation_tokens_total{engine="0",model_name="m"} 9', f"X {bad}"
    )
    s.ingest(poisoned.replace("X", 'generation_tokens_total{engine="0",model_name="m"}'), 0.0, 0.0)
    assert (
        s.counts[f"rejected_{reason}"] == 1 and s.counts["restarts"] == 0
    )  # a skipped counter is not a reset
    assert s.totals["prompt"] == 10 and s.totals["generation"] == 0
    assert all(math.isfinite(x) for x in s.latest.values())


def test_a_garbage_metrics_page_is_counted_and_never_reaches_the_tick() -> None:
    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"vllm:prompt_tokens_total{{{ \x00\xff garbage\n# TYPE x y z\n}")

        def log_message(self, *args: object) -> None: ...

    server = http.server.HTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    s = MetricsScraper(f"http://127.0.0.1:{server.server_address[1]}/metrics", interval_s=0.01, timeout_s=1.0)
    s.start()
    try:
        deadline = time.monotonic() + 5
        while s.counts["malformed"] < 2 and time.monotonic() < deadline:
            s.due(0.0)  # never raises
            time.sleep(0.01)
        assert s.counts["malformed"] >= 2
    finally:
        s.stop()
        server.shutdown()
