"""``benchmarks/proxy_overhead.py`` with a few short streams, the proxy in its own process and inside the
sidecar's: every round streams, the sidecar hears of every proxied stream, and the figures it ends
with are the medians of the pairs it printed, for the streams asked."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import pytest

from tests.benchmarks.bench_module import run_bench

STREAMS, ROUNDS = 4, 2
ARGS = ["--streams", str(STREAMS), "--rounds", str(ROUNDS), "--max-tokens", "4", "--token-ms", "5"]
ARGS += ["--ramp-s", "0", "--settle-s", "0.2"]


@pytest.mark.integration
@pytest.mark.parametrize("in_process", [False, True], ids=["own-process", "in-process"])
def test_every_stream_is_proxied_and_the_last_line_is_the_median_of_the_pairs(
    tmp_path: Path, in_process: bool
) -> None:
    args = [*ARGS, *(["--in-process"] * in_process)]
    lines = run_bench("proxy_overhead", args, env={"TMPDIR": str(tmp_path)}).splitlines()  # its logs in tmp
    rounds = [ln for ln in lines if re.match(r"round \d+ (direct|proxy) +TTFT p50 ", ln)]
    assert len(rounds) == 2 * ROUNDS
    assert json.loads(next(ln for ln in lines if ln.startswith("{"))) == {
        "streams": STREAMS, "rounds": ROUNDS, "max_tokens": 4, "token_ms": 5.0, "ramp_s": 0.0,
        "pin": False, "in_process": in_process,
    }  # fmt: skip

    counters = next(ln for ln in lines if ln.startswith("sidecar's proxy counters:"))
    heard = dict(re.findall(r"(\w+ \w+)=(\d+)", counters))
    proxied = (ROUNDS + 1) * STREAMS  # the warm-up pair too
    if in_process:  # the proxy's own counters, in the sidecar's process
        assert int(heard["proxy streams"]) == proxied
    else:  # a row of each request over the wire (the proxy's own counters reach it later)
        assert int(heard["proxy_wire requests"]) == int(heard["proxy_wire ended"]) == proxied
    assert int(heard.get("proxy price_errors", 0)) == 0

    cpu = next(ln for ln in lines if ln.startswith("CPU per stream: "))
    used = [float(x) for x in re.findall(r"(?:fake|sidecar|process) (\S+) ms \(", cpu)]
    assert len(used) == (2 if in_process else 3) and all(math.isfinite(x) and x >= 0.0 for x in used)

    pairs = next(ln for ln in lines if ln.startswith("added per pair (p50, p99 ms): "))
    added = [(float(a), float(b)) for a, b in re.findall(r"\((\S+), (\S+)\)", pairs)]
    assert len(added) == ROUNDS
    last = re.fullmatch(r"proxy added p50 (\S+) ms \| p99 (\S+) ms \| streams (\d+)", lines[-1])
    assert last is not None and int(last.group(3)) == STREAMS
    for k in (0, 1):
        figure = float(last.group(k + 1))
        assert math.isfinite(figure) and abs(figure) < 1000.0  # a few streams: ms, not seconds
        assert figure == pytest.approx(statistics.median(a[k] for a in added), abs=0.011)  # rounding
