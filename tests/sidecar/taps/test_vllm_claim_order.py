"""The hook's claim reaches the plugin even when the hook's datagram comes during a tick.

vLLM's scheduler hook sends a request's first step (its claim) before vLLM's front end
hears of the request; the plugin's ``start`` for it is sent after. In the scheduler-hook
e2e run on a loaded machine, a hook datagram arrived after the hook's socket had been
drained and before the plugin's was: the plugin took the request as its own and both
taps counted its work (``double_counted``). Here the two datagrams are sent, in vLLM's
order, at that moment of a tick.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from sidecar.app import Sidecar
from sidecar.config import SidecarConfig
from sidecar.contracts.scheduler_wire import Message, NewRow, StepRow
from sidecar.contracts.scheduler_wire import encode as encode_steps
from sidecar.contracts.vllm_wire import VERSION, Iteration, Start, encode
from sidecar.taps.vllm import VllmTaps
from sidecar.wiring import build_sidecar
from tests.support import free_port


@pytest.fixture
def hook_and_plugin() -> Iterator[tuple[Sidecar, VllmTaps]]:
    udp = socket.SOCK_DGRAM
    config = SidecarConfig(
        meter="cpu-model", host="127.0.0.1", port=0, otlp_port=0, ledger_path="", proxy_wire_port=0,
        plugin_port=free_port(udp), hook_port=free_port(udp),
    )  # fmt: skip
    sidecar = build_sidecar(config)
    for tap in sidecar.taps:
        tap.start()
    taps = next(t for t in sidecar.taps if isinstance(t, VllmTaps))
    try:
        yield sidecar, taps
    finally:
        for tap in sidecar.taps:
            tap.stop()
        sidecar.close()


def _send_in_vllms_order(taps: VllmTaps) -> None:
    """The hook's first step of 'chatcmpl-a', then the plugin's start of it (loopback: queued at once)."""
    assert taps.hook is not None and taps.plugin is not None
    now = time.time()  # both receivers refuse what is dated far from their clock
    first_step = [StepRow(0.1, 0.0, [0], [10], [0])]
    step = Message(1, 0, now, "m", [NewRow(0, "chatcmpl-a", 10, 0.1)], first_step, [], [])
    plugin = {"v": VERSION, "pid": 1, "seq": 0, "wall": now, "model": "m", "live": True,
              "it": Iteration(0.0, 1, 10), "start": [Start("chatcmpl-a", 10, 10, 0.1)]}  # fmt: skip
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for data in encode_steps(step):
            s.sendto(data, ("127.0.0.1", taps.hook.port))
        for data in encode(plugin):
            s.sendto(data, ("127.0.0.1", taps.plugin.port))


def test_datagrams_sent_just_after_the_hooks_socket_was_read_still_give_the_claim_first(
    hook_and_plugin: tuple[Sidecar, VllmTaps],
) -> None:
    sidecar, taps = hook_and_plugin
    assert taps.hook is not None and taps.plugin is not None
    drain_hook = taps.hook.due

    def hook_then_arrivals(now_s: float) -> object:
        got = drain_hook(now_s)
        _send_in_vllms_order(taps)  # both arrive between the hook's drain and the plugin's
        taps.hook.due = drain_hook  # type: ignore[method-assign]
        return got

    taps.hook.due = hook_then_arrivals  # type: ignore[method-assign]
    sidecar.tick()
    sidecar.tick()
    assert taps.hook.claims("a")
    assert taps.plugin.counts["starts"] == 1 and taps.plugin.counts["claimed_by_hook"] == 1
