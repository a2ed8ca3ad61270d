"""A tap's hold (a diffusion call begun, reported when it ends) is let go once half
``max_pending_rows`` wait: one forged ``diffusion.batch_start`` span must not make the cap drop
the measured work of every other request (an adversarial run: 9,346 rows dropped)."""

from __future__ import annotations

from collections.abc import Sequence

from sidecar.app import Sidecar
from sidecar.attribution.events import Phase, RequestInfo, WorkEvent
from sidecar.attribution.records import TapReport
from sidecar.config import SidecarConfig
from tests.sidecar.test_app_faults import ScriptedMeter, poll_for
from tests.support import FakeClock


class Holding:
    """A tap that waits for work it says is coming, from ``at_s`` on, and never hands any on."""

    def __init__(self, at_s: float) -> None:
        self.at_s = at_s

    def due(self, now_s: float) -> tuple[Sequence[WorkEvent], Sequence[RequestInfo]]:
        return (), ()

    def hold_s(self, now_s: float) -> float:
        return self.at_s

    def stats(self) -> TapReport:
        return TapReport()


def _request(sidecar: Sidecar, rid: str, t_s: float, rows: int = 1) -> None:
    sidecar.add_request(RequestInfo(rid, start_s=t_s, end_s=t_s + 0.4, output_tokens=5))
    for k in range(rows):
        sidecar.add_work(WorkEvent(rid, t_s + 0.1 + k * 1e-4, t_s + 0.3, Phase.DECODE, 1.0))


def test_a_hold_keeps_records_open_until_half_the_pending_rows_wait_then_it_is_let_go() -> None:
    clock = FakeClock(100.0)
    config = SidecarConfig(meter="sim", settle_s=0.5, split="tokens", max_pending_rows=100)
    sidecar = Sidecar(config, ScriptedMeter(clock), taps=[Holding(clock.t_s)], clock=clock)
    try:
        _request(sidecar, "good", clock.t_s + 0.1)
        poll_for(sidecar, clock, 2.0)
        record = sidecar.lookup("good")
        assert record is not None and not record["final"]  # held: the call's work may still come
        assert sidecar.holds_released == 0
        _request(sidecar, "busy", clock.t_s, rows=60)  # 60 of the 100 rows allowed wait
        poll_for(sidecar, clock, 2.0)
        assert sidecar.holds_released >= 1
        assert sidecar.lookup("good")["final"] and sidecar.lookup("busy")["final"]  # type: ignore[index]
        assert sidecar.attributor.dropped["pending_cap"] == 0
        assert sidecar.snapshot().stats.taps.events[("attribution", "holds_released")] >= 1
    finally:
        sidecar.close()
