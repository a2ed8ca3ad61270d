"""The fit's warm-up hold is bounded in work rows as well as in ticks: a wide batch cannot hold
megabytes of rows while the fit learns."""

from __future__ import annotations

import pytest

from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import Phase, RequestInfo, WorkEvent
from sidecar.attribution.rules import make_rule
from tests.sidecar.attribution.helpers import timeline_with_edges

EDGES = [(0.1 * k, 10.0 * k) for k in range(101)]  # one edge every 0.1 s for 10 s, 100 W
WIDTH = 40  # members per tick


def _wide_batch(max_held_rows: int) -> Attributor:
    att = Attributor(
        timeline_with_edges(EDGES), make_rule("fitted"), unix_offset=lambda: 0.0, max_held_rows=max_held_rows
    )
    for k in range(5):  # five busy ticks of 40 members each, all finished
        for m in range(WIDTH):
            rid = f"r{k}-{m}"
            att.add_work(WorkEvent(rid, 0.1 * k, 0.1 * k + 0.1, Phase.DECODE, 1))
            att.add_request(RequestInfo(rid, end_s=0.1 * k + 0.1, output_tokens=1))
    return att


def test_held_rows_over_the_bound_are_split_by_the_fallback_and_say_warmup() -> None:
    att = _wide_batch(max_held_rows=3 * WIDTH)  # the fit needs 50 busy ticks: it is not ready
    done = att.advance(0.9)
    assert len(done) == 5 * WIDTH  # 200 held rows are over the bound of 120: all split now
    assert all(r.fit_quality == "warmup" for r in done)
    assert sum(r.energy_j for r in done) == pytest.approx(50.0)  # five ticks of 10 J, all attributed


def test_under_the_bound_they_stay_held() -> None:
    assert _wide_batch(max_held_rows=10 * WIDTH).advance(0.9) == []
