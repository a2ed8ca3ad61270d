"""``benchmarks/loadgen_rate.py``: its search doubles the rate until a rate fails its best-of trials,
then bisects four times; lateness is measured from the least-late request; a short run against the
fake server (the loadgen only) prints a finite trial line per trial, with the requests asked, and ends
with the rate those trials give under the search's rule; and one ``vllm bench serve`` trial against the
fake server saves the send times the benchmark reads, one per request."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from servers.models.cli import default_dir
from servers.models.llm import build_llama
from tests.benchmarks.bench_module import load_bench, run_bench

TRIAL = re.compile(r"(\S+) +(\S+) req/s  n= *(\d+)  client p99 +(\S+) ms  server p99 +(\S+) ms")


def test_the_search_doubles_until_a_rate_fails_then_bisects_four_times(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench = load_bench("loadgen_rate")
    asked: list[tuple[float, int]] = []

    def trial(rate: float, n: int) -> tuple[float, float]:  # passes up to 1000 req/s
        asked.append((rate, n))
        return (0.5 if rate <= 1000 else 2.0), 0.7

    assert bench.search(trial, 0.5, "stand-in", 200.0, 2) == 1000.0
    rates = [200, 400, 800, 1600, 1600, 1200, 1200, 1000, 1100, 1100, 1050, 1050]  # failing: best of 2
    assert asked == [(r, max(200, int(r * 0.5))) for r in rates]
    assert len(capsys.readouterr().out.splitlines()) == len(rates)


def test_lateness_is_measured_from_the_least_late_request() -> None:
    bench = load_bench("loadgen_rate")
    on_time = 5.0 + np.arange(100) / 200.0
    assert bench.lateness_p99_ms(on_time[::-1], 100, 200.0) == 0.0  # any start, any order
    early = on_time.copy()
    early[0] -= 0.002  # one sent 2 ms early: the other 99 are 2 ms late
    assert bench.lateness_p99_ms(early, 100, 200.0) == pytest.approx(2.0)
    assert bench.lateness_p99_ms(on_time[:99], 100, 200.0) == math.inf  # a request missing


@pytest.mark.integration
def test_a_short_search_prints_every_trial_and_ends_with_the_rate_they_give(tmp_path: Path) -> None:
    args = ["--no-vllm", "--trial-s", "0.1", "--start", "1600", "--repeats", "2"]
    *lines, last = run_bench("loadgen_rate", args, cwd=tmp_path, timeout_s=120).splitlines()
    trials: list[tuple[float, int, float, float]] = []
    for line in lines:
        m = TRIAL.fullmatch(line)
        assert m is not None and m.group(1) == "loadgen", line
        rate, n, client, server = float(m.group(2)), int(m.group(3)), float(m.group(4)), float(m.group(5))
        assert n == max(200, int(rate * 0.1)) and all(math.isfinite(x) and x >= 0.0 for x in (client, server))
        trials.append((rate, n, client, server))

    replay = iter(trials)

    def trial(rate: float, n: int) -> tuple[float, float]:  # the search again, on the figures printed
        printed_rate, printed_n, client, server = next(replay)
        assert printed_rate == pytest.approx(rate, abs=0.05) and printed_n == n  # the rate: .1f
        return client, server

    bench = load_bench("loadgen_rate")
    rate = bench.search(trial, 0.1, "replay", 1600.0, 2)
    assert next(replay, None) is None  # every trial it ran was printed
    assert last == f"loadgen {rate:.0f} req/s | vllm-bench n/a (not run) | ratio n/a"


@pytest.mark.integration
def test_one_vllm_bench_trial_saves_a_send_time_per_request(tmp_path: Path) -> None:
    bench = load_bench("loadgen_rate")
    tokenizer = str(build_llama(default_dir("llama")))  # as the benchmark does (cached)
    with bench.fake_server() as url:
        client, at_server = bench.vllm_trial(url, 1000.0, 200, tokenizer, tmp_path)
    assert math.isfinite(client) and math.isfinite(at_server) and min(client, at_server) >= 0.0
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert (saved["completed"], saved["failed"], len(saved["start_times"])) == (200, 0, 200)
