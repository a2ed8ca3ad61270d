"""Scheduler-hook datagrams a hostile sender shapes after the hook has heard the engine (an
adversarial review's findings): none costs the engine's requests in flight."""

from __future__ import annotations

from sidecar.attribution.events import RequestInfo
from sidecar.contracts.scheduler_wire import FinRow, NewRow, StepRow
from sidecar.taps import validate as v
from sidecar.taps.spans import TapOutput
from sidecar.taps.vllm_hook import HookReceiver
from tests.sidecar.taps.test_vllm_hook import WALL, dgram


class Clock:
    def __init__(self, t_s: float) -> None:
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s


def ends(out: TapOutput) -> dict[str, str]:
    return {i.request_id: i.attributes["finish_reason"] for i in out.infos if isinstance(i, RequestInfo)}


def test_a_datagram_dated_ahead_read_after_a_stall_ends_nothing_of_an_engine_still_sending() -> None:
    """The tick stalled 6 s; in the socket, in order: one datagram of another pid dated ahead (taken
    as sent when read), then the engine's own. It ended every request of the engine as aborted."""
    wall = Clock(WALL)
    r, out = HookReceiver(lambda unix_s: unix_s - 900.0, wall=wall), TapOutput()
    r.feed(dgram(0, new=[NewRow(0, "a", 50, 0.01)], steps=[StepRow(0.01, 0.0, [0], [50], [0])]), out)
    wall.t_s = WALL + 6.0
    r.feed(dgram(0, pid=31337, wall=WALL + 100.0), out)
    r.feed(dgram(1, wall=WALL + 3.0, steps=[StepRow(0.01, 0.0, [0], [1], [50])]), out)
    r.feed(dgram(2, wall=WALL + 5.9, fin=[FinRow(0, 2, "stop")]), out)
    assert r.counts["restarts"] == 0 and ends(out) == {"a": "stop"}


def test_renew_rows_are_held_to_the_cap_on_requests_in_flight() -> None:
    """``new`` rows were capped, ``renew`` rows (a lost new row sent again) were not: 3 datagrams of
    1,000 each put 3,010 requests in flight under a cap of 50."""
    r, out = HookReceiver(lambda unix_s: unix_s - 900.0, wall=lambda: WALL, max_requests=50), TapOutput()
    r.feed(dgram(0, new=[NewRow(i, f"good-{i}", 5, 0.1) for i in range(10)]), out)
    for seq in range(3):
        rows = tuple(NewRow(seq * 1000 + i, f"x{seq}-{i}", 1, 0.0) for i in range(1000))
        r.feed(dgram(seq, pid=666, renew=rows), out)
    assert r.live == 50 and r.counts["evicted"] == 2960
    assert len(r.senders.get(7).live) == 10  # type: ignore[union-attr]  # the flood paid for itself


def test_the_hooks_start_is_not_moved_a_day_back_by_a_datagram_dated_so() -> None:
    """The first datagram heard set the time before which requests may have been adopted: one dated
    22 h back made the spans of requests the hook had heard add their work a second time."""
    now = 100_000.0
    r, out = HookReceiver(lambda unix_s: unix_s - 900.0, wall=lambda: now), TapOutput()
    r.feed(dgram(0, pid=31337, wall=now - 80_000.0), out)
    assert r.adopted_before() >= (now - 900.0) - 5.0


def test_a_renamed_duplicate_id_still_fits_the_id_check() -> None:
    """An id of 256 characters used twice was renamed ``<id>~<pid>-<idx>``, over the 256 the API
    takes: its record could not be looked up."""
    r, out = HookReceiver(lambda unix_s: unix_s - 900.0, wall=lambda: WALL), TapOutput()
    long_id = "r" * 256
    r.feed(dgram(0, new=[NewRow(0, long_id, 5, 0.1)]), out)
    r.feed(dgram(1, new=[NewRow(100, long_id, 5, 0.1)], fin=[FinRow(100, 1, "stop")]), out)
    (renamed,) = (i.request_id for i in out.infos if isinstance(i, RequestInfo))
    assert renamed != long_id and v.request_id(renamed) == renamed and renamed.endswith("~7-100")
    assert v.suffixed_id("x" * 300, "~" + "b" * 200) != v.suffixed_id("x" * 300, "~" + "c" * 200)
