"""``GET /v1/prices`` (the proxy process's price sheet) follows the ticks, scraped or not."""

from __future__ import annotations

from sidecar.app import Sidecar
from sidecar.config import SidecarConfig
from tests.sidecar.test_app_faults import POLL_S, ScriptedMeter, poll_for
from tests.support import FakeClock


def test_the_price_sheet_is_the_last_ticks_even_when_nothing_read_the_snapshot_since() -> None:
    clock = FakeClock(100.0)
    sidecar = Sidecar(SidecarConfig(meter="sim", settle_s=0.5), ScriptedMeter(clock), clock=clock)
    try:
        assert sidecar.prices()["power_w"] == 0.0  # nothing read yet
        poll_for(sidecar, clock, 1.0 + POLL_S)  # ticks; no /metrics scrape builds the snapshot
        assert sidecar.prices()["power_w"] > 0.0  # the meter's 100 W, as of the last tick
    finally:
        sidecar.close()
