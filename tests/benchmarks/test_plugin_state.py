"""benchmarks/plugin_state.py feeds the plugin receiver as vLLM's plugin does: every request it sends
is started and finished, nothing is refused, and the table of ids it measures keeps the most recent
ones only (the bound that makes its figure a steady state)."""

from __future__ import annotations

import math
import re

import pytest

from sidecar.contracts.vllm_ids import normalize_request_id
from sidecar.taps.vllm_plugin import PluginReceiver
from sidecar.taps.vllm_plugin_seen import SeenIds
from tests.benchmarks.bench_module import load_bench


def test_the_script_starts_and_finishes_every_request_and_prints_the_state_it_holds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_bench("plugin_state")
    monkeypatch.setattr("sys.argv", ["plugin_state.py", "--requests", "1050"])
    bench.main()
    counts, last = capsys.readouterr().out.splitlines()[-2:]
    assert counts == "requests started 1050, finished 1050"
    held = re.fullmatch(r"plugin state MB (\S+)", last)
    assert held is not None
    assert math.isfinite(float(held.group(1))) and 0.0 < float(held.group(1)) < 50.0


def test_each_datagram_is_one_iteration_and_only_the_most_recent_ids_are_kept() -> None:
    bench = load_bench("plugin_state")
    rx = PluginReceiver(lambda unix_s: unix_s - 900.0, port=0, wall=lambda: 1000.0)
    rx.seen = SeenIds(most=300)
    bench.feed_requests(rx, 1050)
    datagrams = 2 * math.ceil(1050 / bench.ROWS)  # one of starts, one of finishes, per 100 requests
    assert rx.counts["received"] == rx.counts["iterations"] == datagrams
    assert rx.counts["starts"] == rx.counts["finished"] == 1050
    assert set(rx.counts) <= {"received", "iterations", "starts", "finished", "lost"}  # nothing refused
    assert rx.counts["lost"] == 0
    ids = [normalize_request_id(f"chatcmpl-{i:032x}") for i in range(1050)]  # as the receiver keeps them
    assert all(rx.seen.claimed(i) and rx.seen.finished(i) for i in ids[-300:])
    assert not any(rx.seen.claimed(i) or rx.seen.finished(i) for i in ids[:-300])
