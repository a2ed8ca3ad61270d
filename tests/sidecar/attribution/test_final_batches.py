"""Final records a batch at a time (``advance(..., most_final)``): the same records, in the same order,
as all at once, however the burst is cut; those found final wait for the next call, not the next seal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import Phase, RequestInfo, WorkEvent
from sidecar.attribution.rules import make_rule
from tests.sidecar.attribution.helpers import timeline_with_edges

EDGES = [(0.1 * k, 10.0 * k) for k in range(101)]  # one edge every 0.1 s for 10 s, 100 W


def _att(**kw: object) -> Attributor:
    return Attributor(timeline_with_edges(EDGES), make_rule("tokens"), unix_offset=lambda: 0.0, **kw)  # type: ignore[arg-type]


def _burst(att: Attributor, n: int, *, silent: int = 0) -> None:
    """``n`` requests that worked and ended within the first second, and ``silent`` that never did."""
    for k in range(n):
        t0 = 0.01 * (k % 50)
        att.add_work(WorkEvent(f"r{k}", t0, t0 + 0.2, Phase.DECODE, 1 + k % 7))
        att.add_request(RequestInfo(f"r{k}", end_s=t0 + 0.2, output_tokens=1 + k % 7))
    for k in range(silent):
        att.add_request(RequestInfo(f"s{k}"))  # no work, no end: expires after request_timeout_s


def _all_batches(att: Attributor, until_s: float, most: int) -> list[list[tuple[object, ...]]]:
    batches = [att.advance(until_s, most).values]
    while batches[-1] and att.finals_left:
        batches.append(att.advance(until_s, most).values)
    return batches


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 60), silent=st.integers(0, 5), most=st.integers(1, 70))
def test_batches_join_to_what_one_call_gives(n: int, silent: int, most: int) -> None:
    whole, cut = _att(request_timeout_s=2.0), _att(request_timeout_s=2.0)
    for att in (whole, cut):
        _burst(att, n, silent=silent)
    want = whole.advance(5.0).values
    batches = _all_batches(cut, 5.0, most)
    assert all(len(b) <= most for b in batches)
    assert [v for b in batches for v in b] == want  # every field of every record, in order
    assert cut.finals_left == 0 and len(cut.requests) == len(whole.requests) == 0
    assert cut.dropped == whole.dropped  # expired counted once, not once a batch


def test_what_waits_is_built_first_by_the_next_call_and_counted_as_left() -> None:
    att = _att()
    _burst(att, 10)
    first = att.advance(2.0, 4)
    assert [v[0] for v in first.values] == ["r0", "r1", "r2", "r3"]  # the oldest first
    assert att.finals_left == 6 and len(att.requests) == 6  # still live, their work still theirs
    att.add_request(RequestInfo("late", end_s=1.95, output_tokens=1))  # due at the next seal: after
    # those found final before it
    second = att.advance(3.0, 4)
    assert [v[0] for v in second.values] == ["r4", "r5", "r6", "r7"]
    rest = att.advance(3.0)  # no most: the rest of them, then what is due now
    assert [v[0] for v in rest.values] == ["r8", "r9", "late"]
    assert att.finals_left == 0


def test_one_found_final_and_evicted_before_its_batch_is_not_built_twice() -> None:
    att = _att(max_requests=100)
    _burst(att, 6)
    att.advance(2.0, 2)
    assert att.finals_left == 4
    att.max_requests = 3  # the cap now evicts one of the six's four left, and the newcomer
    att.add_request(RequestInfo("newcomer"))
    out = att.advance(2.0, 2)
    ids = [v[0] for v in out.values]
    assert len(ids) == len(set(ids))
    later = att.advance(2.0, 10)
    made = ids + [v[0] for v in later.values]
    assert sorted(made) == sorted({*made}) and {"r2", "r3", "r4", "r5"} <= {*made}


def test_no_most_builds_all_and_a_most_under_one_is_refused() -> None:
    att = _att()
    _burst(att, 5)
    with pytest.raises(ValueError, match="at least 1"):
        att.advance(2.0, 0)
    assert len(att.advance(2.0)) == 5 and att.finals_left == 0
