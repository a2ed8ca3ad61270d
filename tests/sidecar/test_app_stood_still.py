"""The sidecar while a device's counter stands still, its reads on time, and then catches up: the
energy made meanwhile goes to the requests that ran meanwhile (``Timeline.doubt_hold_s``,
``Timeline.stood_still``). An independent re-run found the stand's requests final at 0 J."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from sidecar.app import Sidecar
from sidecar.attribution.events import Phase, RequestInfo, WorkEvent
from sidecar.config import SidecarConfig
from sidecar.timeline import DOUBT_HOLD_S
from tests.sidecar.scripted_meter import ScriptedMeter, poll_for
from tests.support import FakeClock

RIDS = ("before", "during", "after")


@contextmanager
def standing(still_s: float) -> Iterator[tuple[Sidecar, FakeClock]]:
    """Three requests of 2 s decode at 100 W one after the other; from 2.5 s in, the counter reads
    one value for ``still_s`` (its updates not published), then shows all it made meanwhile."""
    clock = FakeClock(100.0)
    meter = ScriptedMeter(clock)
    sidecar = Sidecar(SidecarConfig(meter="sim", settle_s=0.5, split="tokens"), meter, clock=clock)
    try:
        poll_for(sidecar, clock, 2.0)
        t0 = clock.t_s
        for k, rid in enumerate(RIDS):
            a, b = t0 + 2.0 * k, t0 + 2.0 * (k + 1)
            sidecar.add_request(RequestInfo(rid, model="m", start_s=a, end_s=b, output_tokens=10))
            sidecar.add_work(WorkEvent(rid, a, b, Phase.DECODE, 10.0))
        poll_for(sidecar, clock, 2.5)
        with meter.showing(meter.read().energy_j):
            for _ in range(round(still_s / 0.5)):
                poll_for(sidecar, clock, 0.5)
        yield sidecar, clock
    finally:
        sidecar.close()


def split(still_s: float) -> dict[str, float]:
    with standing(still_s) as (sidecar, clock):
        poll_for(sidecar, clock, 6.0)
        records = {rid: sidecar.lookup(rid) for rid in RIDS}
        assert all(r is not None and r["final"] for r in records.values())
        assert sidecar.timeline.stood_still == (1 if still_s else 0)
        return {rid: float(r["energy_j"]) for rid, r in records.items() if r is not None}


def test_energy_made_while_the_counter_stood_still_goes_to_the_requests_that_ran_then() -> None:
    """Before: the stand's ticks were sealed at 0 J as they passed and the catch-up went to the
    last one's requests: the request running through the 3 s stand got 49 J, 202 J without it."""
    clean, stood = split(0.0), split(3.0)
    assert sum(stood.values()) == pytest.approx(sum(clean.values()))
    for rid in RIDS:
        assert stood[rid] == pytest.approx(clean[rid], rel=0.05)


def test_sealing_waits_for_a_standing_counter_only_so_long() -> None:
    """A counter that stays still longer than ``DOUBT_HOLD_S`` (a dead driver) holds sealing no more."""
    with standing(DOUBT_HOLD_S + 5.0) as (sidecar, _):
        assert all((sidecar.lookup(rid) or {}).get("final") for rid in RIDS)
