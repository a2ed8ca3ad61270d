"""A task named after the request's record is final (a slow client's span) still reaches ledger and API."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from sidecar.app import Sidecar
from sidecar.attribution.events import RequestInfo, StepBatch, WorkEvent
from sidecar.config import SidecarConfig
from sidecar.export.store import Ledger
from sidecar.sim.meter import SimFeeder, SimMeter
from sidecar.sim.run import MODEL_NAME, SimConfig, simulate
from sidecar.taps.tap import SourceTap
from tests.support import FakeClock


class _Untasked:
    """The simulated requests' work and info, without their task (the client span has not come)."""

    def __init__(self, inner: SimFeeder) -> None:
        self.inner = inner
        self.infos: dict[str, RequestInfo] = {}

    def due(self, now_s: float) -> tuple[Sequence[WorkEvent | StepBatch], Sequence[RequestInfo]]:
        events, infos = self.inner.due(now_s)
        self.infos.update({i.request_id: i for i in infos})
        return events, [replace(i, task="unknown") for i in infos]


def test_a_late_task_reaches_the_ledger_and_the_api_but_not_the_energy() -> None:
    base = SimConfig()
    run = simulate(replace(base, workload=replace(base.workload, n_requests=8, start_s=1.0)), seed=5)
    clock = FakeClock(0.0)
    source = _Untasked(SimFeeder(run, 0.0))
    tasks: list[dict[str, str]] = []
    sidecar = Sidecar(
        SidecarConfig(meter="sim", model=MODEL_NAME, settle_s=0.5, fit_warmup_ticks=5),
        SimMeter(run, clock=clock, t0=0.0),
        taps=[SourceTap(source)],
        clock=clock,
        ledger=Ledger(":memory:"),
        on_tasks=tasks.append,
    )
    while clock.t_s < run.duration_s + 2.0:
        clock.advance(0.02)
        sidecar.poller.read_once()
        sidecar.tick()
    sidecar.tick(seal_until_s=math.inf)
    first, second = (source.infos[r.request_id] for r in run.requests[:2])
    before = sidecar.lookup(first.request_id)
    assert before is not None and before["final"] is True and before["task"] == "unknown"

    sidecar.add_request(replace(first, task="code"))  # the client span, late
    sidecar.add_request(
        replace(second, task="unknown", output_tokens=999)
    )  # other late info: refused, counted
    sidecar.tick()

    after = sidecar.lookup(first.request_id)
    assert after is not None and after["task"] == "code"
    assert after["energy_j"] == before["energy_j"] and after["final"] is True
    assert [r["task"] for r in sidecar.ledger.recent(100) if r["request_id"] == first.request_id] == ["code"]
    assert tasks == [{first.request_id: "code"}]
    dropped = sidecar.attributor.dropped
    assert dropped["task_late"] == 1 and dropped["info_after_final"] == 1
    assert sidecar.ledger.counts["task_late"] == 1
    # a task for a record that has one (e.g. a client's label of a diffusion record): no loss, not counted
    sidecar.add_request(replace(first, task="chat"))
    sidecar.tick()
    again = sidecar.lookup(first.request_id)
    assert again is not None and again["task"] == "code"
    assert dropped["task_late"] == 1 and sidecar.ledger.counts["task_late"] == 1
    text = sidecar.exporter.render().decode()
    assert 'jouletrace_task="code"' not in text  # the histograms counted it under "unknown" already
