"""Bounded state and lifecycle of the attributor: warm-up bound, expiry, caps, unknown energy."""

from __future__ import annotations

import math

import pytest

from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import WORK_LOST, Phase, RequestInfo, WorkEvent
from sidecar.attribution.rules import make_rule
from sidecar.timeline import Timeline
from tests.sidecar.attribution.helpers import GPU, timeline_with_edges

EDGES = [(0.1 * k, 10.0 * k) for k in range(101)]  # one edge every 0.1 s for 10 s, 100 W


def _att(rule: str = "tokens", **kw: object) -> Attributor:
    return Attributor(timeline_with_edges(EDGES), make_rule(rule), unix_offset=lambda: 0.0, **kw)  # type: ignore[arg-type]


def test_warmup_hold_is_split_by_the_fallback_after_its_time_bound_and_records_say_warmup() -> None:
    att = _att("fitted", warmup_max_s=1.0)  # the fit needs 50 busy ticks; light traffic gives 5
    for k in range(5):
        att.add_work(WorkEvent(f"r{k}", 0.1 * k, 0.1 * k + 0.1, Phase.DECODE, 5))
        att.add_request(RequestInfo(f"r{k}", end_s=0.1 * k + 0.1, output_tokens=5))
    assert att.advance(0.9) == []  # held: under a second of warm-up
    done = att.advance(1.6)
    assert sorted(r.request_id for r in done) == [f"r{k}" for k in range(5)]
    assert all(r.energy_j == pytest.approx(10.0) and r.fit_quality == "warmup" for r in done)


def test_without_the_time_bound_the_hold_would_keep_them() -> None:
    att = _att("fitted")
    att.add_work(WorkEvent("r", 0.0, 0.1, Phase.DECODE, 5))
    att.add_request(RequestInfo("r", end_s=0.1, output_tokens=5))
    assert att.advance(9.0) == []


def test_a_request_that_never_finishes_expires_and_is_counted() -> None:
    att = _att(request_timeout_s=2.0)
    att.add_request(RequestInfo("silent"))  # no work, no end: it used to stay forever
    att.add_work(WorkEvent("stalled", 0.0, 0.5, Phase.DECODE, 5))
    assert att.advance(1.5) == []
    done = att.advance(3.0)  # silent: seen at 0.0 (first sealed edge); stalled: last work at 0.5
    assert sorted(r.request_id for r in done) == ["silent", "stalled"]
    assert all(r.attributes["end_inferred"] == "true" for r in done) and att.dropped["expired"] == 2
    assert len(att.requests) == 0
    by_id = {r.request_id: r for r in done}  # no work seen at all: never a measured 0 J (a long answer
    assert by_id["silent"].attributes["energy_unknown_reason"] == "expired"  # not streamed, a queue wait)
    assert "energy_unknown" not in by_id["stalled"].attributes  # its work until it stalled is measured


def test_an_end_far_in_the_future_is_refused_and_the_request_expires() -> None:
    att = _att(request_timeout_s=2.0, max_future_s=60.0)
    att.advance(0.5)
    att.add_work(WorkEvent("y2100", 0.5, 0.6, Phase.DECODE, 5))
    att.add_work(WorkEvent("y2100", 0.6, 4.0e9, Phase.DECODE, 5))  # work until 2100, too
    att.add_request(RequestInfo("y2100", end_s=4.0e9))
    (rec,) = att.advance(3.0)
    assert att.dropped["future"] == 2
    assert rec.request_id == "y2100" and rec.attributes["end_inferred"] == "true"
    assert rec.attributes["energy_unknown"] == "true"  # part of its work was refused


def test_the_in_flight_cap_evicts_the_oldest_counted_and_marked() -> None:
    att = _att(max_requests=3)
    for k in range(5):
        att.add_work(WorkEvent(f"r{k}", 0.0, 9.0, Phase.DECODE, 1))
    done = att.advance(1.0)
    assert [r.request_id for r in done] == ["r0", "r1"] and len(att.requests) == 3
    assert att.dropped["evicted"] == 2 and done[0].attributes["energy_unknown_reason"] == "evicted"


def test_the_pending_cap_refuses_the_newest_rows_counted() -> None:
    att = _att(max_pending_rows=2)
    att.advance(0.1)
    for k in range(4):
        att.add_work(WorkEvent(f"r{k}", 5.0, 6.0, Phase.DECODE, 1))
    att.advance(0.2)
    assert att.dropped["pending_cap"] == 2 and len(att._pending) == 2


def test_before_any_counter_update_the_caps_still_hold() -> None:
    """A meter that never updates (stalled or lost at start): nothing can be sealed, but requests
    beyond ``max_requests`` are evicted and rows beyond ``max_pending_rows`` refused, counted (both
    grew with every request the taps sent, 100,000 forged ones: 85 MB)."""
    att = Attributor(
        Timeline([GPU]), make_rule("tokens"), max_requests=3, max_pending_rows=4, unix_offset=lambda: 0.0
    )
    for k in range(10):
        att.add_request(RequestInfo(f"r{k}"))
        att.add_work(WorkEvent(f"r{k}", 0.0, 1.0, Phase.DECODE, 1))
    done = att.advance(5.0)
    assert len(att.requests) == 3 and att.dropped["evicted"] == 7 and len(done) == 7
    assert all(r.attributes["energy_unknown_reason"] == "evicted" for r in done)
    assert att.backlog_rows() == 4 and att.dropped["pending_cap"] == 6
    assert att.requests.scheduled <= 4 * 3 + 1024


def test_the_cap_evicts_requests_that_never_worked_before_one_that_is_working() -> None:
    att = _att(max_requests=3)
    att.add_work(WorkEvent("working", 0.0, 1.0, Phase.DECODE, 5))
    att.advance(1.0)  # its work is measured
    for k in range(5):
        att.add_request(RequestInfo(f"junk{k}", start_s=1.0))
    done = att.advance(1.1)
    assert [r.request_id for r in done] == ["junk0", "junk1", "junk2"]
    assert att.requests.get("working") is not None and att.dropped["evicted"] == 3


def test_while_ticks_are_held_for_the_fit_the_request_cap_still_holds() -> None:
    """Busy ticks held for the fit's warm-up, then the meter stops (no tick released): requests
    beyond ``max_requests`` are evicted at once, not kept until the hold ends."""
    att = _att("fitted", max_requests=5)
    att.add_work(WorkEvent("busy", 0.0, 0.5, Phase.DECODE, 5))
    assert att.advance(0.5) == [] and att._held
    for k in range(20):
        att.add_request(RequestInfo(f"r{k}", end_s=0.4))
    done = att.advance(0.5)
    assert len(att.requests) == 5 and att.dropped["evicted"] == 16 and att._held
    assert {r.request_id for r in done} == {"busy", *(f"r{k}" for k in range(15))}


def test_work_lost_as_late_gives_an_energy_unknown_record_never_a_plain_zero() -> None:
    att = _att()
    att.advance(5.0)
    att.add_work(WorkEvent("after_restart", 1.0, 2.0, Phase.DECODE, 5))  # time already sealed
    att.add_request(RequestInfo("after_restart", start_s=1.0, end_s=2.0, output_tokens=5))
    (rec,) = att.advance(6.0)
    assert rec.final and rec.energy_j == 0.0
    assert rec.attributes["energy_unknown"] == "true" and att.dropped["energy_unknown"] == 1


def test_a_tap_that_lost_a_requests_work_makes_its_record_energy_unknown_not_a_short_share() -> None:
    """The hook or plugin lost a datagram while the request was in flight: its info says so."""
    att = _att()
    for rid in ("whole", "short"):
        att.add_work(WorkEvent(rid, 1.0, 2.0, Phase.DECODE, 5))
    att.add_request(RequestInfo("whole", start_s=1.0, end_s=3.0, output_tokens=10))
    att.add_request(
        RequestInfo("short", start_s=1.0, end_s=3.0, output_tokens=10, attributes={WORK_LOST: "true"})
    )
    att.add_request(
        RequestInfo("none", start_s=1.0, end_s=3.0, output_tokens=10, attributes={WORK_LOST: "true"})
    )
    done = {r.request_id: r for r in att.advance(6.0)}
    assert "energy_unknown" not in done["whole"].attributes and done["whole"].energy_j > 0
    for rid in ("short", "none"):  # a share that is too low, and a 0 J record with 20 tokens
        assert done[rid].attributes["energy_unknown_reason"] == "work_lost", rid
    assert att.dropped["energy_unknown"] == 2


def test_a_request_that_ended_before_the_timeline_began_is_energy_unknown() -> None:
    att = _att()
    att.add_request(RequestInfo("while_down", start_s=-30.0, end_s=-20.0, output_tokens=5))
    (rec,) = att.advance(1.0)
    assert rec.attributes["energy_unknown_reason"] == "not_covered"


def test_a_request_without_work_that_began_before_the_timeline_is_energy_unknown_not_0_j() -> None:
    """In flight when the sidecar started, its steps since taken by the scheduler hook under another
    id (``unknown-<pid>-<idx>``): its own id has the span's info and no work. One that began after
    the timeline did and had no work (never scheduled) is a measured 0 J."""
    att = _att()
    att.add_work(WorkEvent("unknown-7-3", 0.0, 2.0, Phase.DECODE, 20))
    att.add_request(RequestInfo("in_flight", start_s=-30.0, end_s=2.0, output_tokens=40))
    att.add_request(RequestInfo("queued_then_gone", start_s=1.0, end_s=2.0, output_tokens=0))
    done = {r.request_id: r for r in att.advance(6.0)}
    in_flight, gone = done["in_flight"], done["queued_then_gone"]
    assert in_flight.energy_j == 0 and in_flight.attributes["energy_unknown_reason"] == "not_covered"
    assert gone.energy_j == 0 and "energy_unknown" not in gone.attributes


def test_a_tick_looks_only_at_requests_due_not_at_every_idle_one() -> None:
    att = _att(request_timeout_s=600.0)
    for k in range(1000):
        att.add_request(RequestInfo(f"idle{k}"))
    att.advance(1.0)
    assert att.requests.due(5.0) == []  # nothing due: the tick touched none of them
    assert len(att.requests) == 1000


def test_provisional_lists_every_open_request() -> None:
    att = _att()
    att.add_work(WorkEvent("open", 0.0, 0.5, Phase.DECODE, 5))
    att.advance(math.inf)
    (rec,) = att.provisional()
    assert rec.request_id == "open" and not rec.final and rec.energy_j == pytest.approx(50.0)


def test_an_end_given_before_the_first_seal_is_kept() -> None:
    att = _att(max_future_s=60.0)
    att.add_request(RequestInfo("early", end_s=0.5, output_tokens=1))
    assert att.dropped["future"] == 0 and att.requests.get("early").info.end_s == 0.5  # type: ignore[union-attr]


def test_resume_takes_up_a_stored_record_and_refuses_a_broken_one() -> None:
    att = _att()
    saved = {
        "request_id": "r",
        "model": "m",
        "operation": "chat",
        "task": "t",
        "unit": "token",
        "phase_j": {"prefill": 1.0, "decode": 2.0},
        "busy_s": 0.5,
        "start_s": 1.0,
        "end_s": 1e12,  # another boot's clock: dropped, the timeout ends it
        "attributes": {"end_stated": "true"},
        "prompt_tokens": 3,
        "output_tokens": 4,
    }
    assert att.resume(saved, now_s=10.0)
    rec = att.record("r")
    assert rec is not None and rec.energy_j == pytest.approx(3.0) and rec.end_s is None
    assert not att.resume(saved, now_s=10.0)  # already live
    assert not att.resume({"request_id": "x"}, now_s=10.0)
    assert not att.resume({**saved, "request_id": "y", "phase_j": {"decode": float("nan")}}, now_s=10.0)
    assert att.requests.get("x") is None and att.requests.get("y") is None


def test_a_stop_marks_stated_ends_so_resume_keeps_them_and_not_last_work_times() -> None:
    att = _att()
    att.add_work(WorkEvent("ending", 0.0, 9.5, Phase.DECODE, 5))
    att.add_request(RequestInfo("ending", end_s=9.95))
    att.add_work(WorkEvent("running", 0.0, 9.5, Phase.DECODE, 5))
    att.advance(math.inf)  # the last edge is 10.0: 'ending' needs 10.0 covered
    saved = {r.request_id: r.to_json() for r in att.provisional()}
    assert saved["ending"]["attributes"] == {"end_stated": "true"} and saved["running"]["attributes"] == {}
    later = _att()
    assert later.resume(saved["ending"], now_s=20.0) and later.resume(saved["running"], now_s=20.0)
    assert later.requests.get("ending").info.end_s == 9.95  # type: ignore[union-attr]
    assert later.requests.get("running").info.end_s is None  # type: ignore[union-attr]
