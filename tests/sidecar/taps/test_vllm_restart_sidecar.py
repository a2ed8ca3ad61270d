"""A vLLM restart through the sidecar: real UDP datagrams from two vLLM pids, the sidecar's tick.

The requests in flight when the first process went away end as aborted once the new
process is heard (final records with their energy), not after ``request_timeout_s``. The meter is
the scripted fake of ``test_app_faults`` (an NVIDIA GPU cannot run here).
"""

from __future__ import annotations

import json
import socket
from typing import Any

from sidecar.app import Sidecar
from sidecar.config import SidecarConfig
from sidecar.taps.senders import QUIET_S
from sidecar.taps.tap import SourceTap
from sidecar.taps.vllm_plugin import PluginReceiver
from tests.sidecar.test_app_faults import ScriptedMeter, poll_for
from tests.support import FakeClock


def send(port: int, pid: int, seq: int, wall: float, **kw: Any) -> None:
    msg = {"v": 1, "pid": pid, "seq": seq, "wall": wall, "model": "tiny", "live": True, **kw}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(json.dumps(msg).encode(), ("127.0.0.1", port))


def test_a_new_vllm_pid_makes_the_old_requests_final_as_aborted_within_a_second_of_it() -> None:
    clock = FakeClock(100.0)
    rx = PluginReceiver(
        lambda unix_s: unix_s - 900.0, port=0, wall=lambda: clock.t_s + 900.0
    )  # wall 1000 = 100 s
    port = rx.start()
    config = SidecarConfig(meter="sim", settle_s=0.5, split="tokens", request_timeout_s=600.0)
    sidecar = Sidecar(config, ScriptedMeter(clock), taps=[SourceTap(rx)], clock=clock)
    try:
        poll_for(sidecar, clock, 1.0)  # t = 101
        send(
            port,
            7,
            0,
            1001.0,
            it=[0.0, 2, 20, 0, 0],
            start=[["chatcmpl-a", 10, 10, 0.05], ["b", 10, 10, 0.05]],
        )
        for k in range(1, 5):
            send(port, 7, k, 1001.0 + 0.05 * k, it=[0.0, 2, 0, 0, 0])
        poll_for(sidecar, clock, 0.3)  # t = 101.3: vLLM pid 7 is killed here, mid-decode
        assert sidecar.lookup("a")["final"] is False  # type: ignore[index]
        poll_for(sidecar, clock, QUIET_S)  # t = 106.3: vLLM takes longer than that to start again
        assert sidecar.lookup("a")["final"] is False  # type: ignore[index]  # down, not yet known restarted
        send(port, 8, 0, 1006.3, it=[0.0, 0, 0, 0, 0])  # the restarted vLLM's first datagram
        poll_for(sidecar, clock, 1.0)  # t = 107.3: sealed up to 106.8
        for rid in ("a", "b"):
            rec = sidecar.lookup(rid)
            assert rec is not None and rec["final"] and rec["energy_j"] > 0, rid
            assert rec["attributes"]["finish_reason"] == "abort" and rec["output_tokens"] == 5
        assert rx.counts["aborted_on_restart"] == 2 and rx.counts["restarts"] == 1
        assert len(sidecar.attributor.requests) == 0
    finally:
        rx.stop()
        sidecar.close()
