"""A finalize pass decides over its due requests' rows at once exactly as it did request by request
(which end, and why a final record's energy is unknown).

``_reference`` is the loop of ``RequestLifecycle._finalize`` before :func:`plan_finals` (git 64d1355):
the same requests end, with the same inferred flags and expiry count, the others are looked at
again at the same times, and first-seen times are written back the same, on edge inputs (no info,
no stated end, a NaN or infinite end, seen before the first seal, an infinite timeout, no period).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.attribution.events import RequestInfo
from sidecar.attribution.lifecycle import _EPS_S, RequestLifecycle, plan_finals
from sidecar.attribution.requests import Accumulator, RequestTable

times = st.floats(-10.0, 10.0) | st.sampled_from([0.0, math.inf, -math.inf, math.nan])
requests = st.tuples(
    st.sampled_from(["none", "no-end", "end"]),
    times,  # the stated end
    st.sampled_from([-math.inf, -1.0, 0.0, 3.0]),  # first seen
    st.sampled_from([-math.inf, -2.0, 1.0, 4.5]),  # latest work
    st.booleans(),  # work still pending
)


def _reference(
    table: RequestTable,
    due: list[int],
    sealed: float,
    period: float,
    first_sealed: float,
    timeout_s: float,
    live_work: set[int],
) -> tuple[list[int], list[bool], list[tuple[int, float]], int]:
    done, inferred, later, expired = [], [], [], 0
    for code in due:
        acc = table.by_code(code)
        assert acc is not None
        end = acc.info.end_s if acc.info is not None else None
        if end is None:
            if acc.seen_s == -math.inf:
                acc.seen_s = first_sealed
            last = max(acc.last_t, acc.seen_s)
            if sealed - last < timeout_s:
                later.append((code, last + timeout_s))
                continue
            expired += 1
        elif sealed < end + period - _EPS_S:
            later.append((code, end + period))
            continue
        elif code in live_work:
            later.append((code, sealed))
            continue
        done.append(acc.slot)
        inferred.append(end is None)
    return done, inferred, later, expired


def _table(specs: list[tuple[str, float, float, float, bool]]) -> tuple[RequestTable, list[int], set[int]]:
    table = RequestTable()
    codes, live = [], set()
    for k, (kind, end, seen, last, pending) in enumerate(specs):
        rid = f"r{k}"
        code = table.code(rid)
        if kind != "none":
            table.set_info(rid, RequestInfo(rid, end_s=end if kind == "end" else None))
        acc = table.by_code(code)
        assert acc is not None
        acc.seen_s = seen
        table._sums.last_t[acc.slot] = last
        codes.append(code)
        if pending:
            live.add(code)
    return table, codes, live


@settings(max_examples=400, deadline=None)
@given(
    st.lists(requests, max_size=12),
    st.floats(-5.0, 12.0),
    st.sampled_from([0.0, 0.1]),
    st.sampled_from([-0.5, 2.0]),
    st.sampled_from([0.5, 600.0, math.inf]),
)
def test_the_plan_is_the_per_request_loop(
    specs: list[tuple[str, float, float, float, bool]],
    sealed: float,
    period: float,
    first_sealed: float,
    timeout_s: float,
) -> None:
    table_a, due, live = _table(specs)
    table_b, _, _ = _table(specs)
    want = _reference(table_a, due, sealed, period, first_sealed, timeout_s, live)
    has_work = np.array([code in live for code in due], dtype=bool)
    got = plan_finals(table_b, due, sealed, period, first_sealed, timeout_s, has_work)
    done_slots = table_b.slots_of(got.done_codes).tolist()
    assert (done_slots, got.inferred.tolist(), got.expired) == (want[0], want[1], want[3])
    assert repr(got.later) == repr(want[2])  # NaN-safe: the same codes and check times, in order
    seen_a = [table_a.by_code(c).seen_s for c in due]  # type: ignore[union-attr]
    seen_b = [table_b.by_code(c).seen_s for c in due]  # type: ignore[union-attr]
    assert seen_a == seen_b
    assert np.array_equal(table_a._sums.seen_s, table_b._sums.seen_s)


def _reason_reference(acc: Accumulator, first: float | None, inferred: bool) -> str:
    """``RequestLifecycle._unknown_reason`` before it read the rows at once (git 64d1355), with the
    timeout's ``expired`` (no work seen) after it, and a request without work that began before the
    timeline ``not_covered`` (not only one that ended before it)."""
    if acc.lost_rows:
        return "work_lost"
    if inferred and not math.isfinite(acc.first_t):
        return "expired"
    info = acc.info
    if math.isfinite(acc.first_t) or info is None or first is None:
        return ""
    began = info.start_s if info.start_s is not None else info.end_s
    return "not_covered" if began is not None and began < first else ""


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),  # lost rows
            times,  # earliest work
            st.none() | st.tuples(st.none() | times, st.none() | times),  # info: (start, end)
            st.booleans(),  # ended by the timeout
        ),
        max_size=10,
    ),
    st.none() | st.sampled_from([-1.0, 0.0, 2.0]),
)
def test_unknown_reasons_over_rows_are_the_per_request_ones(
    specs: list[tuple[int, float, tuple[float | None, float | None] | None, bool]], first: float | None
) -> None:
    table = RequestTable()
    for k, (lost, first_t, info, _) in enumerate(specs):
        rid = f"r{k}"
        table.code(rid)
        if info is not None:
            table.set_info(rid, RequestInfo(rid, start_s=info[0], end_s=info[1]))
        acc = table.get(rid)
        assert acc is not None
        acc.lost_rows = lost
        table._sums.first_t[acc.slot] = first_t
    accs = [table.get(f"r{k}") for k in range(len(specs))]
    owner = SimpleNamespace(requests=table, _first_sealed_t=first)
    inferred = [spec[3] for spec in specs]
    got = RequestLifecycle._unknown_reasons(owner, [a.slot for a in accs if a is not None], inferred)  # type: ignore[arg-type]
    assert got == [
        _reason_reference(a, first, t) for a, t in zip(accs, inferred, strict=True) if a is not None
    ]
