"""The taps in the sidecar's wiring: built from knobs, one ordered list, the plugin drained before spans."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from sidecar.app import Sidecar
from sidecar.config import SidecarConfig
from sidecar.contracts.scheduler_wire import Message, NewRow, StepRow
from sidecar.contracts.scheduler_wire import encode as encode_steps
from sidecar.contracts.vllm_wire import VERSION, Iteration, Start, encode
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.proxy_wire import ProxyWireReceiver
from sidecar.taps.spans import AttrValue, ReceivedSpan, TapOutput
from sidecar.taps.vllm import VllmTaps
from sidecar.wiring import build_sidecar
from tests.support import free_port


def config(**kw: object) -> SidecarConfig:
    base = {"meter": "cpu-model", "host": "127.0.0.1", "port": 0, "otlp_port": 0, "ledger_path": "",
            "proxy_wire_port": 0}  # fmt: skip
    return SidecarConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_the_taps_are_one_list_with_the_vllm_taps_before_the_otlp_receiver() -> None:
    sidecar = build_sidecar(config(otlp_port=4317, plugin_port=9466, vllm_metrics_url="http://x/metrics",
                                   otlp_forward_endpoint="127.0.0.1:1"))  # fmt: skip
    try:
        assert [type(t) for t in sidecar.taps] == [VllmTaps, OtlpReceiver]
        vllm, receiver = sidecar.taps
        assert isinstance(vllm, VllmTaps) and isinstance(receiver, OtlpReceiver)
        assert vllm.plugin is not None and vllm.scraper is not None and vllm.forwarder is not None
        assert vllm.spans in receiver.handlers
        assert sidecar.on_final == vllm.on_final
    finally:
        sidecar.close()


def test_the_snapshot_reports_every_taps_counters_including_the_span_handlers() -> None:
    sidecar = build_sidecar(config(otlp_port=4317, plugin_port=9466, vllm_metrics_url="http://x/metrics"))
    try:
        events = sidecar.snapshot().stats.taps.events
        for key in [
            ("otlp", "received"),
            ("otlp", "ignored"),
            ("vllm_spans", "requests"),
            ("vllm_spans", "work_from_spans"),
            ("diffusion_spans", "batches"),
            ("diffusion_spans", "malformed"),
        ]:
            assert events.get(key) == 0, key
    finally:
        sidecar.close()


def test_plugin_scraper_and_forwarder_are_off_unless_configured() -> None:
    sidecar = build_sidecar(config(otlp_port=4317, plugin_port=0))
    try:
        vllm = sidecar.taps[0]
        assert isinstance(vllm, VllmTaps)
        assert (vllm.plugin, vllm.scraper, vllm.forwarder) == (None, None, None)
    finally:
        sidecar.close()


def test_the_plugin_and_metrics_taps_work_without_an_otlp_receiver() -> None:
    sidecar = build_sidecar(config(otlp_port=0, plugin_port=9466, vllm_metrics_url="http://x/metrics"))
    try:
        (vllm,) = sidecar.taps
        assert isinstance(vllm, VllmTaps) and vllm.plugin is not None and vllm.scraper is not None
    finally:
        sidecar.close()


def _llm_request_span(raw_id: str, end_unix_s: float) -> ReceivedSpan:
    attrs: dict[str, AttrValue] = {
        "gen_ai.request.id": raw_id,
        "gen_ai.usage.prompt_tokens": 10,
        "gen_ai.usage.completion_tokens": 5,
        "gen_ai.latency.e2e": 0.5,
        "gen_ai.latency.time_in_model_prefill": 0.1,
        "gen_ai.latency.time_in_model_decode": 0.3,
    }
    return ReceivedSpan("t1", "s1", "", "llm_request", end_unix_s - 0.5, end_unix_s, attrs)


@pytest.fixture
def plugin_and_spans() -> Iterator[Sidecar]:
    sidecar = build_sidecar(config(otlp_port=free_port(), plugin_port=free_port(socket.SOCK_DGRAM)))
    for tap in sidecar.taps:
        tap.start()
    try:
        yield sidecar
    finally:
        for tap in sidecar.taps:
            tap.stop()
        sidecar.close()


def _same_tick(sidecar: Sidecar) -> None:
    """The plugin's datagram for request 'abc' and vLLM's span for it arrive before one tick."""
    vllm, receiver = sidecar.taps
    assert isinstance(vllm, VllmTaps) and isinstance(receiver, OtlpReceiver) and vllm.plugin is not None
    now = time.time()  # both receivers refuse what is dated far from their clock
    message = {"v": VERSION, "pid": 1, "seq": 0, "wall": now, "model": "m", "live": True,
               "it": Iteration(0.0, 1, 10), "start": [Start("chatcmpl-abc", 10, 10, 0.1)]}  # fmt: skip
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for data in encode(message):
            s.sendto(data, ("127.0.0.1", vllm.plugin.port))  # loopback: queued before sendto returns
    receiver.accept([_llm_request_span("chatcmpl-abc", now)])


def test_in_the_wired_order_the_plugins_claim_stops_the_span_from_adding_the_work_twice(
    plugin_and_spans: Sidecar,
) -> None:
    _same_tick(plugin_and_spans)
    plugin_and_spans.tick()
    events = plugin_and_spans.snapshot().stats.taps.events
    assert events[("vllm_plugin", "starts")] == 1 and events[("vllm_spans", "requests")] == 1
    assert events[("vllm_spans", "work_from_spans")] == 0


def test_drained_the_other_way_round_the_span_would_add_the_work_again(plugin_and_spans: Sidecar) -> None:
    """Why the order matters: the same arrivals with the receiver drained first."""
    wired = plugin_and_spans
    _same_tick(wired)
    reversed_order = Sidecar(wired.config, wired.meter, taps=list(reversed(wired.taps)), clock=wired.clock)
    reversed_order.tick()
    events = reversed_order.snapshot().stats.taps.events
    assert events[("vllm_plugin", "starts")] == 1 and events[("vllm_spans", "work_from_spans")] == 1


def test_a_span_that_arrives_while_a_tick_runs_waits_for_the_next_so_a_claim_sent_before_it_counts(
    plugin_and_spans: Sidecar,
) -> None:
    """Under CPU starvation a tick can take long: the plugin's datagram and then vLLM's span of the
    same request arrive after the vLLM taps were drained but before the receiver is. The receiver
    hands on only what it had at the tick's start (``cut``), so the span is handled the next tick,
    after the claim; handed on at once, it added the request's work a second time."""
    sidecar = plugin_and_spans
    vllm = sidecar.taps[0]
    assert isinstance(vllm, VllmTaps)
    drain_vllm = vllm.due
    arrived: list[bool] = []

    def due_then_arrivals(now_s: float) -> tuple[list[Any], list[Any]]:
        out = drain_vllm(now_s)
        if not arrived:  # the first tick, after the vLLM taps' drain
            _same_tick(sidecar)
            arrived.append(True)
        return out

    vllm.due = due_then_arrivals  # type: ignore[method-assign]
    sidecar.tick()
    events = sidecar.snapshot().stats.taps.events
    assert (events.get(("vllm_plugin", "starts"), 0), events[("vllm_spans", "requests")]) == (0, 0)  # wait
    sidecar.tick()
    events = sidecar.snapshot().stats.taps.events
    assert events[("vllm_plugin", "starts")] == 1 and events[("vllm_spans", "requests")] == 1
    assert events[("vllm_spans", "work_from_spans")] == 0


def test_the_hook_is_drained_first_and_its_claims_reach_the_plugin_and_the_spans() -> None:
    sidecar = build_sidecar(config(otlp_port=4317, plugin_port=9466, hook_port=9467))
    try:
        taps = next(t for t in sidecar.taps if isinstance(t, VllmTaps))
        assert taps.hook is not None and taps.plugin is not None
        assert taps.plugin.claimed_by == taps.hook.claims
        (data,) = encode_steps(
            Message(
                1,
                0,
                time.time(),  # dated now: the receiver rejects a datagram dated far from its clock
                "m",
                [NewRow(0, "chatcmpl-a", 5, 0.1)],
                [StepRow(0.1, 0.0, [0], [5], [0])],
                [],
                [],
            )
        )
        taps.hook.feed(data, TapOutput())
        assert taps.spans.claims("a") and not taps.spans.claims("b")
        assert taps.stats().events[("vllm_hook", "steps")] == 1
    finally:
        sidecar.close()
    off = build_sidecar(config(otlp_port=4317, plugin_port=9466, hook_port=0))
    try:
        taps = next(t for t in off.taps if isinstance(t, VllmTaps))
        assert taps.hook is None and taps.plugin is not None and taps.plugin.claimed_by is None
    finally:
        off.close()


def test_every_listener_binds_localhost_unless_its_own_knob_says_otherwise() -> None:
    d = defaults = SidecarConfig()
    assert (d.host, d.otlp_host, d.plugin_host, d.hook_host, d.proxy_wire_host) == ("127.0.0.1",) * 5
    otlp_port, plugin_port = free_port(), free_port(socket.SOCK_DGRAM)
    hook_port, wire_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    sidecar = build_sidecar(replace(defaults, meter="cpu-model", port=0, ledger_path="", otlp_port=otlp_port,
                                    plugin_port=plugin_port, hook_port=hook_port,
                                    proxy_wire_port=wire_port))  # fmt: skip
    try:
        for tap in sidecar.taps:
            tap.start()
        taps = next(t for t in sidecar.taps if isinstance(t, VllmTaps))
        assert taps.plugin is not None and taps.plugin._sock is not None
        assert taps.plugin._sock.getsockname() == ("127.0.0.1", plugin_port)
        assert taps.hook is not None and (taps.hook.host, taps.hook.port) == ("127.0.0.1", hook_port)
        receiver = next(t for t in sidecar.taps if isinstance(t, OtlpReceiver))
        assert (receiver.host, receiver.port) == ("127.0.0.1", otlp_port)
        wire = next(t for t in sidecar.taps if isinstance(t, ProxyWireReceiver))
        assert (wire.host, wire.port) == ("127.0.0.1", wire_port)
    finally:
        for tap in sidecar.taps:
            tap.stop()
        sidecar.close()


def test_the_http_host_no_longer_moves_the_otlp_plugin_and_hook_listeners() -> None:
    moved = build_sidecar(config(host="192.0.2.1", otlp_port=4317, plugin_port=9466, hook_port=9467))
    own = build_sidecar(config(otlp_host="127.0.0.2", otlp_port=4317, plugin_host="127.0.0.3",
                               plugin_port=9466, hook_host="127.0.0.4", hook_port=9467,
                               otlp_max_message_bytes=1024))  # fmt: skip
    try:  # built, not started
        for sidecar, otlp_host, plugin_host, hook_host in (
            (moved, "127.0.0.1", "127.0.0.1", "127.0.0.1"),
            (own, "127.0.0.2", "127.0.0.3", "127.0.0.4"),
        ):
            receiver = next(t for t in sidecar.taps if isinstance(t, OtlpReceiver))
            taps = next(t for t in sidecar.taps if isinstance(t, VllmTaps))
            assert receiver.host == otlp_host and taps.plugin is not None and taps.plugin.host == plugin_host
            assert taps.hook is not None and taps.hook.host == hook_host
        assert next(t for t in own.taps if isinstance(t, OtlpReceiver)).max_message_bytes == 1024
    finally:
        moved.close()
        own.close()


def test_a_part_that_raises_costs_only_its_own_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin's datagrams are read before the hook is drained: a hook that raised lost them too."""
    sidecar = build_sidecar(config(plugin_port=9466, hook_port=9467))
    try:
        taps = next(t for t in sidecar.taps if isinstance(t, VllmTaps))
        assert taps.hook is not None and taps.plugin is not None
        start = encode(
            {"v": VERSION, "pid": 3, "seq": 0, "wall": time.time(), "model": "m",
             "it": list(Iteration(0.0, 0, 5, 0, 0)), "start": [list(Start("cmpl-p", 5, 5, 0.01))]}
        )  # fmt: skip
        monkeypatch.setattr(taps.plugin, "receive", lambda: start)

        def broken(now_s: float) -> object:
            raise OverflowError("a bug in the hook's drain")

        monkeypatch.setattr(taps.hook, "due", broken)
        events, _ = taps.due(time.monotonic())
        assert [getattr(e, "request_id", None) for e in events] == ["p"]
        assert taps.hook.counts["internal_errors"] == 1
    finally:
        sidecar.close()
