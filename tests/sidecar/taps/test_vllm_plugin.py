"""The vLLM plugin (with a stand-in for vLLM's base class) and the sidecar's UDP receiver."""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from sidecar.attribution.events import Phase, StepBatch
from sidecar.contracts.vllm_wire import MAX_DATAGRAM_BYTES, decode, encode
from sidecar.taps import udp, vllm_plugin
from sidecar.taps.spans import TapOutput
from sidecar.taps.vllm_plugin import PluginReceiver
from tests.support import free_port, work_events


def msg(seq: int, it: list[Any] | None = None, pid: int = 7, wall: float = 1000.0, **kw: Any) -> bytes:
    m: dict[str, Any] = {"v": 1, "pid": pid, "seq": seq, "wall": wall, "model": "tiny", "live": True, **kw}
    if it is not None:
        m["it"] = it
    return json.dumps(m).encode()


def receiver(**kw: Any) -> PluginReceiver:
    """A receiver on a fake clock: datagrams are dated around Unix time 1000 s and read at 1010 (a
    datagram dated after it is read is taken as sent then); port 0: any free one."""
    return PluginReceiver(lambda unix_s: unix_s - 900.0, port=0, wall=lambda: 1010.0, **kw)  # read after sent


def test_iterations_become_per_request_prefill_and_decode_work() -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(
        msg(0, [0.0, 2, 30, 0, 0], wall=1000.00, start=[["chatcmpl-a", 10, 10, 0.02], ["b", 20, 20, 0.02]]),
        out,
    )
    prefills = [e for e in out.events if e.phase is Phase.PREFILL]
    assert [(e.request_id, e.units, e.t1_s) for e in prefills] == [("a", 10, 100.0), ("b", 20, 100.0)]
    assert prefills[0].context_tokens == 10 * 11 / 2
    out = TapOutput()
    rx.feed(msg(1, [0.005, 2, 0, 0, 0], wall=1000.02), out)
    (batch,) = out.events  # one iteration: one step batch for every request decoding
    assert isinstance(batch, StepBatch)
    assert not batch.timed  # the plugin infers where an iteration starts: not weighed by its duration
    decodes = [(e.request_id, e.phase, e.units, e.steps, e.context_tokens) for e in work_events(out.events)]
    assert decodes == [("a", Phase.DECODE, 1, 1, 11), ("b", Phase.DECODE, 1, 1, 21)]
    assert batch.t0_s == pytest.approx(100.0) and batch.t1_s == pytest.approx(100.015)
    rx.feed(msg(2, [0.0, 2, 0, 0, 0], wall=1000.04), out)  # the KV caches grew by the token decoded
    assert [e.context_tokens for e in work_events(out.events)[2:]] == [12, 22]
    assert rx.claims("a") and rx.claims("b") and not rx.claims("c")


def test_a_finished_request_gets_its_info_and_leaves_the_batch() -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(msg(0, [0.0, 1, 10, 0, 0], start=[["chatcmpl-a", 10, 10, 0.02]]), out)
    rx.feed(
        msg(1, [0.0, 1, 0, 0, 0], wall=1000.1, fin=[["chatcmpl-a", 10, 2, 0.0, 0.02, 0.1, 0.5, "length"]]),
        out,
    )
    (info,) = out.infos
    assert (info.request_id, info.model, info.output_tokens, info.end_s) == (
        "a",
        "tiny",
        2,
        pytest.approx(100.1),
    )
    assert info.start_s == pytest.approx(99.6) and info.attributes["finish_reason"] == "length"
    later = TapOutput()
    rx.feed(msg(2, [0.0, 0, 0, 0, 0], wall=1000.2), later)
    assert later.events == []


def test_a_request_that_left_vllm_without_finishing_stops_getting_decode_work() -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(msg(0, [0.0, 2, 10, 0, 0], start=[["a", 5, 5, 0.01], ["b", 5, 5, 0.01]]), out)
    rx.feed(msg(1, [0.0, 1, 0, 0, 0], wall=1000.01, gone=["b"]), out)  # b was aborted (client went away)
    later = TapOutput()
    rx.feed(msg(2, [0.0, 1, 0, 0, 0], wall=1000.02), later)
    assert [e.request_id for e in work_events(later.events)] == ["a"] and rx.counts["aborted"] == 1


def test_without_live_membership_finished_requests_get_whole_phase_work() -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(msg(0, [0.0, 1, 0, 0, 0], live=False, fin=[["cmpl-z", 8, 5, 0.0, 0.1, 0.4, 0.6, "stop"]]), out)
    assert [e.phase for e in out.events] == [Phase.PREFILL, Phase.DECODE] and rx.claims("z")
    assert rx.counts["whole_phase"] == 1


def test_lost_malformed_and_restarts_are_counted_and_a_restart_empties_the_batch() -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(msg(0, [0.0, 1, 5, 0, 0], start=[["a", 5, 5, 0.01]]), out)
    rx.feed(msg(3, [0.0, 1, 0, 0, 0], wall=1000.01), out)
    rx.feed(b"\xff not json", out)
    rx.feed(json.dumps({"v": 99}).encode(), out)
    rx.feed(json.dumps({"v": 1, "pid": 7, "seq": 4, "wall": 1.0, "it": [0, "x"]}).encode(), out)
    assert rx.counts["lost"] == 2 and rx.counts["malformed"] == 2
    assert rx.counts["rejected_malformed"] == 1  # a header that reads: its bad part alone is refused
    fresh = TapOutput()
    rx.feed(msg(0, [0.0, 0, 0, 0, 0], pid=8, wall=1006.0), fresh)  # vLLM restarted: new pid, seq from 0
    assert rx.counts["restarts"] == 1 and fresh.events == [] and rx.counts["lost"] == 2


def test_token_totals_by_time_for_the_metrics_cross_check() -> None:
    rx = PluginReceiver(lambda unix_s: unix_s - 900.0, port=0)  # the real clock: datagrams dated now
    rx.start()
    try:
        now = time.time()
        rx.tokens.started_wall_s = now - 10.0  # as if it had listened for 10 s
        rx.feed(msg(0, [0.0, 3, 10, 2, 0], wall=now - 2), TapOutput())
        rx.feed(msg(1, [0.0, 4, 0, 0, 0], wall=now - 1), TapOutput())
        assert rx.tokens_until(now - 100) is None  # before the receiver listened
        assert rx.tokens_until(now - 2.5) == (0, 0)
        assert rx.tokens_until(now - 1.5) == (12, 3) and rx.tokens_until(now + 9) == (12, 7)
    finally:
        rx.stop()


def test_long_messages_are_split_into_datagrams_under_the_limit_and_counted_once() -> None:
    fins = [[f"chatcmpl-{i:040d}", 1, 1, 0.0, 0.0, 0.0, 0.0, "stop"] for i in range(400)]
    parts = encode({"v": 1, "pid": 1, "seq": 0, "wall": 1.0, "it": [0, 400, 0, 0, 0], "fin": fins})
    assert len(parts) == 3 and all(len(p) <= MAX_DATAGRAM_BYTES for p in parts)
    decoded = [decode(p) for p in parts]
    assert sum(len(d["fin"]) for d in decoded) == 400 and ["it" in d for d in decoded] == [True, False, False]


# ---- the plugin itself, with a stand-in for vLLM's base class -----------------------------------


@dataclass
class PromptStats:
    computed: int = 0
    cached_tokens: int = 0


@dataclass
class Iteration:
    num_generation_tokens: int = 1
    prompt_token_stats: PromptStats = field(default_factory=PromptStats)
    num_preempted_reqs: int = 0
    finished_requests: list[Any] = field(default_factory=list)
    time_to_first_tokens_iter: list[float] = field(default_factory=list)


@dataclass
class Sched:
    num_running_reqs: int = 1
    num_waiting_reqs: int = 0
    kv_cache_usage: float = 0.25


@pytest.fixture
def plugin_class(monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    loggers = types.ModuleType("vllm.v1.metrics.loggers")
    loggers.StatLoggerBase = object  # type: ignore[attr-defined]
    logger = types.ModuleType("vllm.logger")
    logger.init_logger = logging.getLogger  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm.logger", logger)
    for name in ("vllm", "vllm.v1", "vllm.v1.metrics"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "vllm.v1.metrics.loggers", loggers)
    monkeypatch.delitem(sys.modules, "servers.vllm.plugin", raising=False)
    from servers.vllm.plugin import JouletraceStatLogger

    yield JouletraceStatLogger
    sys.modules.pop("servers.vllm.plugin", None)


def test_the_plugin_survives_the_sidecar_being_down_and_reaches_it_once_it_is_back(
    plugin_class: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    monkeypatch.setenv("JOULETRACE_PLUGIN_PORT", str(port))
    config = types.SimpleNamespace(model_config=types.SimpleNamespace(served_model_name="tiny"))
    plugin = plugin_class(config)
    for _ in range(50):  # nobody listening: never raises, never blocks
        plugin.record(Sched(), Iteration())
    rx = PluginReceiver(lambda s: s, host="127.0.0.1", port=port)
    rx.start()
    try:
        plugin.record(Sched(), Iteration(num_generation_tokens=3, prompt_token_stats=PromptStats(7, 1)))
        deadline = time.monotonic() + 2
        while rx.counts["iterations"] == 0 and time.monotonic() < deadline:
            rx.due(0.0)
        assert rx.counts["iterations"] == 1 and rx.model == "tiny"
        assert rx.sched == (1.0, 0.0, 0.25) and rx.tokens_until(time.time() + 1) == (8, 3)
        assert rx.counts["lost"] == 0  # a receiver that starts late takes the stream as it finds it
    finally:
        rx.stop()
    plugin.record(None, Iteration())  # sidecar gone again
    assert plugin.sent >= 1


def test_the_plugin_never_raises_into_vllm_on_stats_it_does_not_understand(plugin_class: type) -> None:
    plugin = plugin_class(types.SimpleNamespace())
    plugin.record(object(), object())
    assert plugin.dropped == 1


def test_datagrams_a_spent_budget_leaves_are_handled_first_next_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_plugin, "feed_all", lambda d, f, c: udp.feed_all(d, f, c, budget_s=-1.0))
    rx = receiver()
    first = msg(0, [0.0, 0, 5, 0, 0], start=[["a", 5, 5, 0.01]])
    second = msg(1, [0.0, 1, 5, 0, 0], wall=1000.01, start=[["b", 5, 5, 0.01]])
    events, _ = rx.handle([first, second], 110.0)
    assert [e.request_id for e in work_events(events)] == ["a"] and rx.counts["drain_budget_spent"] == 1
    events, _ = rx.handle(rx.receive(), 110.1)  # no socket started: only what was left
    assert "b" in [e.request_id for e in work_events(events)] and rx.counts["lost"] == 0


@pytest.mark.parametrize("port", ["", "off", "9466/udp", "70000"])
def test_a_bad_plugin_port_turns_the_plugin_off_instead_of_stopping_vllm(
    plugin_class: type, monkeypatch: pytest.MonkeyPatch, port: str
) -> None:
    """Adversarial probe: vLLM builds its stat loggers with no guard, and the plugin's constructor
    raised ValueError for such a port: ``vllm serve`` failed to start."""
    monkeypatch.setenv("JOULETRACE_PLUGIN_PORT", port)
    config = types.SimpleNamespace(model_config=types.SimpleNamespace(served_model_name="tiny"))
    plugin = plugin_class(config)
    plugin.record(Sched(), Iteration())
    plugin.log_engine_initialized()
    assert plugin.sock is None and plugin.sent == 0


def test_the_sidecars_host_name_is_resolved_once_not_per_datagram(
    plugin_class: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adversarial probe: ``sendto((name, port))`` asked the resolver on every datagram, in vLLM's
    loop: a resolver that did not answer held each iteration for its timeout."""
    port = free_port(socket.SOCK_DGRAM)
    monkeypatch.setenv("JOULETRACE_PLUGIN_HOST", "localhost")
    monkeypatch.setenv("JOULETRACE_PLUGIN_PORT", str(port))
    config = types.SimpleNamespace(model_config=types.SimpleNamespace(served_model_name="tiny"))
    plugin = plugin_class(config)
    for _ in range(5):
        plugin.record(Sched(), Iteration())
    assert plugin.addr == ("127.0.0.1", port) and plugin.sent == 5  # sent to the number, not the name


def test_a_step_with_a_first_token_looks_at_the_steps_requests_only(plugin_class: type) -> None:
    """Adversarial probe: every request's state was walked at each step with a prefill, however many
    waited in vLLM's queue (100,000: ~15 ms of its output loop a step)."""
    stepped = sys.modules[plugin_class.__module__]._stepped
    states = {f"r{k}": object() for k in range(1000)}
    outputs = types.SimpleNamespace(outputs=[types.SimpleNamespace(request_id="r7"), types.SimpleNamespace()])
    assert [rid for rid, _ in stepped(outputs, states)] == ["r7"]
    assert len(stepped(types.SimpleNamespace(), states)) == 1000  # outputs not as expected: all, as before
