"""Fault: the node's wall clock steps forward and back (NTP) while requests run.

The sidecar dates energy on its monotonic clock and converts each datagram's Unix
time at the edge with the offset read when it is handled, so a step moves the
sender's and the sidecar's wall clocks together and changes nothing. Only a
datagram built before a step and handled after it is dated off by the step: after a
step forward the attribution refuses its work, behind its sealed ticks, and counts it;
after a step back it says it was sent after it was read, and is taken as sent when read
(counted ``wall_ahead``).

Real UDP into the plugin receiver, the sidecar's own tick and ledger; the wall and
monotonic clocks are fakes (stepping the real clock would need root and would move
every other process here), the meter is the scripted fake of
``tests/sidecar/test_app_faults.py`` (an NVIDIA GPU cannot run here).
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from sidecar.app import Sidecar
from sidecar.config import SidecarConfig
from sidecar.taps.spans import WallToMono
from sidecar.taps.tap import SourceTap
from sidecar.taps.vllm_plugin import PluginReceiver
from tests.sidecar.test_app_faults import ScriptedMeter, poll_for
from tests.support import FakeClock

STEP_S = 3600.0


class Node:
    """The node's clocks: monotonic (``mono``) and a wall clock that an NTP step can move."""

    def __init__(self) -> None:
        self.mono = FakeClock(100.0)
        self.offset_s = 1_780_000_000.0

    def wall(self) -> float:
        return self.mono.t_s + self.offset_s


class Vllm:
    """A vLLM plugin sending over real UDP, dating each datagram on the node's wall clock."""

    def __init__(self, node: Node, port: int) -> None:
        self.node, self.port, self.seq = node, port, 0

    def datagram(self, **kw: Any) -> bytes:
        msg = {
            "v": 1,
            "pid": 7,
            "seq": self.seq,
            "wall": self.node.wall(),
            "model": "tiny",
            "live": True,
            **kw,
        }
        self.seq += 1
        return json.dumps(msg).encode()

    def send(self, data: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(data, ("127.0.0.1", self.port))

    def serve(self, sidecar: Sidecar, rid: str, tokens: int = 5) -> None:
        """One request: prefilled, ``tokens - 1`` decode iterations 50 ms apart, finished."""
        self.send(self.datagram(it=[0.0, 1, 10, 0, 0], start=[[rid, 10, 10, 0.05]]))
        for _ in range(tokens - 1):
            poll_for(sidecar, self.node.mono, 0.05)
            self.send(self.datagram(it=[0.0, 1, 0, 0, 0]))
        poll_for(sidecar, self.node.mono, 0.05)
        e2e_s = 0.05 * tokens
        self.send(self.datagram(fin=[[rid, 10, tokens, 0.0, 0.05, e2e_s - 0.05, e2e_s, "length"]]))


@pytest.fixture
def stack() -> Any:
    node = Node()
    rx = PluginReceiver(WallToMono(wall=node.wall, mono=node.mono), port=0, wall=node.wall)
    port = rx.start()
    config = SidecarConfig(meter="sim", settle_s=0.5, split="tokens")
    sidecar = Sidecar(config, ScriptedMeter(node.mono), taps=[SourceTap(rx)], clock=node.mono)
    yield node, rx, sidecar, Vllm(node, port)
    rx.stop()
    sidecar.close()


@pytest.mark.parametrize("step_s", [STEP_S, -STEP_S], ids=["forward", "back"])
def test_a_wall_clock_step_changes_no_record_and_a_datagram_caught_in_it_is_counted(
    stack: Any, step_s: float
) -> None:
    node, rx, sidecar, vllm = stack
    poll_for(sidecar, node.mono, 1.0)  # the counter has updated: ready
    vllm.serve(sidecar, "before")
    # a request in flight across the step: started before, finished after
    vllm.send(vllm.datagram(it=[0.0, 1, 10, 0, 0], start=[["across", 10, 10, 0.05]]))
    poll_for(sidecar, node.mono, 0.05)
    caught = vllm.datagram(it=[0.0, 1, 10, 0, 0], start=[["caught", 10, 10, 0.05]])  # built, not yet sent
    node.offset_s += step_s  # NTP steps the node's wall clock
    vllm.send(caught)  # handled after the step: dated off by step_s
    for _ in range(3):
        vllm.send(vllm.datagram(it=[0.0, 1, 0, 0, 0]))
        poll_for(sidecar, node.mono, 0.05)
    vllm.send(vllm.datagram(fin=[["across", 10, 5, 0.0, 0.05, 0.2, 0.25, "length"]]))
    vllm.serve(sidecar, "after")
    poll_for(sidecar, node.mono, 2.0)
    sidecar.tick(seal_until_s=float("inf"))

    assert sidecar.tick_failures == 0  # no crash
    for rid in ("before", "across", "after"):
        rec = sidecar.lookup(rid)
        assert rec is not None and rec["final"] and rec["energy_j"] > 0, rid
        assert 0.0 < rec["end_s"] - rec["start_s"] < 1.0, rid  # not an hour long, nor negative
    totals = sidecar.attributor.totals
    assert totals.measured_j > 0 and abs(totals.conservation_error_j) <= 1e-9 * totals.measured_j
    assert rx.counts["malformed"] == 0 and rx.counts["internal_errors"] == 0
    dropped = sidecar.attributor.dropped
    if step_s > 0:
        # the datagram caught in the step is dated step_s behind: its work rows (caught's prefill,
        # across's decode step) are refused and counted; the requests that lost them are marked,
        # never a silent 0 J
        assert dropped["late"] == 2
        assert sidecar.lookup("across")["attributes"].get("energy_unknown") == "true"
    else:
        # dated step_s ahead of when it was read, which it was sent before: taken as sent then
        # (counted), so nothing is held or refused and no record changes
        assert rx.counts["wall_ahead"] == 1 and dropped["future"] == 0 and dropped["late"] == 0
        assert "energy_unknown" not in sidecar.lookup("across")["attributes"]
    for rid in ("before", "after"):
        assert "energy_unknown" not in sidecar.lookup(rid)["attributes"], rid
    caught = sidecar.lookup("caught")  # still decoding (no fin): its later iterations were dated right
    assert caught is not None and not caught["final"] and caught["energy_j"] > 0
