"""The senders table on its own: restarts, quiet senders, the cap, forged dates."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest

from sidecar.taps import validate as v
from sidecar.taps.senders import Senders
from sidecar.taps.spans import TapOutput


@dataclass
class State:
    pid: int
    heard_s: float
    ended_at: list[float] = field(default_factory=list)


def table(**kw: float) -> tuple[Senders[State], list[State]]:
    ended: list[State] = []

    def end(state: State, at_s: float, out: TapOutput) -> None:
        state.ended_at.append(at_s)
        ended.append(state)

    return Senders(State, end, Counter(), quiet_s=5.0, **kw), ended  # type: ignore[arg-type]


def test_a_sender_is_kept_by_pid_and_its_latest_send_is_remembered() -> None:
    t, ended = table()
    a = t.heard(7, 10.0, TapOutput())
    assert t.heard(7, 12.0, TapOutput()) is a and a.heard_s == 12.0
    assert t.heard(7, 11.0, TapOutput()) is a and a.heard_s == 12.0  # a late datagram: not moved back
    assert ended == [] and len(t) == 1


def test_a_new_pid_dated_before_the_old_ones_last_send_is_no_restart() -> None:
    """A forger may date its datagram in the past (never after it is read): the old sender stays."""
    t, ended = table()
    t.heard(7, 100.0, TapOutput())
    t.heard(9, 0.0, TapOutput())
    assert ended == [] and len(t) == 2 and t.counts["restarts"] == 0


def test_a_new_pid_after_quiet_ends_the_quiet_one_at_the_new_ones_time() -> None:
    t, ended = table()
    t.heard(7, 100.0, TapOutput())
    t.heard(8, 104.0, TapOutput())  # 7 still counts as sending
    t.heard(9, 106.0, TapOutput())  # 7 quiet for 6 s, 8 for 2 s
    assert [(s.pid, s.ended_at) for s in ended] == [(7, [106.0])] and t.counts["restarts"] == 1


def test_the_same_pid_restarted_is_a_fresh_state() -> None:
    t, ended = table()
    a = t.heard(7, 100.0, TapOutput())
    b = t.restart(7, 100.5, TapOutput())
    assert b is not a and ended == [a] and t.get(7) is b and t.counts["restarts"] == 1


def test_a_new_pid_beyond_the_cap_is_refused_while_all_send_and_a_quiet_one_makes_room() -> None:
    t, ended = table(max_senders=2)
    t.heard(1, 100.0, TapOutput())
    t.heard(2, 99.0, TapOutput())
    with pytest.raises(v.Rejected, match="processes heard") as err:
        t.heard(3, 101.0, TapOutput())  # both sent within quiet_s: neither is ended for it
    assert err.value.reason == "too_many_senders" and ended == [] and len(t) == 2 and t.get(3) is None
    t.heard(3, 104.5, TapOutput())  # pid 2 quiet for 5.5 s: the restart rule ends it
    assert [s.pid for s in ended] == [2] and t.counts["restarts"] == 1 and len(t) == 2


def test_a_sweep_ends_only_the_quiet_while_another_spoke_after_them() -> None:
    t, ended = table()
    t.heard(1, 100.0, TapOutput())
    t.sweep(200.0, TapOutput())
    assert ended == []  # alone
    t.heard(2, 103.0, TapOutput())
    t.sweep(104.9, TapOutput())
    assert ended == []
    t.sweep(105.0, TapOutput())
    assert [s.pid for s in ended] == [1] and t.counts["senders_gone"] == 1
    t.sweep(500.0, TapOutput())
    assert len(t) == 1  # the last one is kept


def test_a_datagram_dated_after_it_was_read_judges_others_by_the_last_one_heard() -> None:
    """Taken as sent when read, one read after a 6 s stall made every sender look quiet whose own
    datagrams still waited in the socket behind it: it now counts as sent no later than the last one
    heard from anyone."""
    t, ended = table()
    t.heard(7, 100.0, TapOutput())
    judged = t.judged_s(106.0, ahead_s=50.0)
    assert judged == 100.0
    t.heard(9, 106.0, TapOutput(), judged)
    assert ended == [] and t.counts["restarts"] == 0
    assert t.judged_s(106.0, ahead_s=0.0) == 106.0  # dated honestly: its own time


def test_no_sweep_after_a_drain_that_left_datagrams_waiting() -> None:
    """Two engines; a drain whose budget ran out read one's datagram and not the other's."""
    t, ended = table()
    t.heard(1, 100.0, TapOutput())
    t.heard(2, 104.0, TapOutput())  # 1 still counts as sending then
    t.sweep(106.0, TapOutput(behind=True))
    assert ended == []
    t.sweep(106.0, TapOutput())  # caught up: 1 has sent nothing since 100.0
    assert [s.pid for s in ended] == [1]
