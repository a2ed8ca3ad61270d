"""The sidecar while a device's reads are garbage: the energy made meanwhile goes to the requests
that ran meanwhile, when the counter is back (``Timeline.doubt_hold_s``, ``CounterGains``)."""

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

NVML_ALL_ONES_J = (2**64 - 1) / 1000.0
RIDS = ("early", "late")


@contextmanager
def garbled(garbage_s: float) -> Iterator[tuple[Sidecar, FakeClock]]:
    """Two requests one after the other, each 2 s of decode at 100 W; the counter reads all-ones
    for ``garbage_s`` from 0.5 s in. The sidecar as the garbage ends."""
    clock = FakeClock(100.0)
    meter = ScriptedMeter(clock)
    sidecar = Sidecar(SidecarConfig(meter="sim", settle_s=0.5, split="tokens"), meter, clock=clock)
    try:
        poll_for(sidecar, clock, 1.0)
        t0 = clock.t_s
        for rid, a, b in [("early", 0.0, 2.0), ("late", 2.0, 4.0)]:
            sidecar.add_request(RequestInfo(rid, model="m", start_s=t0 + a, end_s=t0 + b, output_tokens=10))
            sidecar.add_work(WorkEvent(rid, t0 + a, t0 + b, Phase.DECODE, 10.0))
        poll_for(sidecar, clock, 0.5)
        with meter.showing((NVML_ALL_ONES_J,)):
            for _ in range(round(garbage_s)):
                poll_for(sidecar, clock, 1.0)
        yield sidecar, clock
    finally:
        sidecar.close()


def energies(sidecar: Sidecar) -> dict[str, float]:
    records = {rid: sidecar.lookup(rid) for rid in RIDS}
    assert all(r is not None and r["final"] for r in records.values())
    return {rid: float(r["energy_j"]) for rid, r in records.items() if r is not None}


def split(garbage_s: float) -> dict[str, float]:
    with garbled(garbage_s) as (sidecar, clock):
        poll_for(sidecar, clock, 6.0)
        return energies(sidecar)


def test_energy_made_while_the_reads_were_garbage_goes_to_the_requests_that_ran_then() -> None:
    """Before: the 3 s of garbage showed no energy, sealed at 0 J, and the recovered 300 J all
    went to the request running when the counter came back (early 50 J, late 360 J)."""
    clean, garbage = split(0.0), split(3.0)
    assert sum(garbage.values()) == pytest.approx(sum(clean.values()))
    for rid in RIDS:
        assert garbage[rid] == pytest.approx(clean[rid], rel=0.03)


@pytest.mark.parametrize("garbage_s", [DOUBT_HOLD_S - 10.0, DOUBT_HOLD_S + 5.0])
def test_sealing_waits_for_a_device_in_doubt_only_so_long(garbage_s: float) -> None:
    """Records of requests that ran while the reads were garbage wait for the counter, at most
    ``DOUBT_HOLD_S``: then they are final with what was known."""
    with garbled(garbage_s) as (sidecar, _):
        final = [(sidecar.lookup(rid) or {}).get("final") for rid in RIDS]
        assert final == [garbage_s > DOUBT_HOLD_S] * 2
