"""The proxy wire receiver under generated hostile input: nothing escapes ``feed``, counters stay a
bounded set, a bad row never costs the good request next to it, and the work it yields is sane."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.taps.proxy_wire import ProxyWireReceiver
from sidecar.taps.validate import REASONS
from tests.sidecar.taps.fuzzing import NOW_S, datagram_bytes, hostile

GOOD = [
    ("begin", ["good", 1.0, "/v1/chat/completions", "m", True, "chat", "team", None, 40]),
    ("chunks", ["good", 0, [600_000, 500_000, 400_000]]),
    ("usage", ["good", 12, 3]),
    ("alive", ["good"]),
    ("end", ["good", 0.3, "ok", 200, "m"]),
]
BAD_TEMPLATES = {
    "begin": ["bad", 1.0, "/v1/completions", None, False, None, None, None, 0],
    "chunks": ["bad", 0, [100]],
    "usage": ["bad", 1, 1],
    "alive": ["bad"],
    "end": ["bad", 0.1, "ok", 200, None],
}
COUNTERS = {f"rejected_{r}" for r in REASONS} | {
    "received",
    "malformed",
    "requests",
    "ended",
    "alive",
    "unknown_request",
    "chunks_missing",
    "lost",
    "reordered",
    "seq_jumps",
    "internal_errors",
}


@st.composite
def bad_row(draw: st.DrawFn) -> tuple[str, Any]:
    section = draw(st.sampled_from(sorted(BAD_TEMPLATES)))
    row = list(BAD_TEMPLATES[section])
    if draw(st.booleans()):
        return section, row[: draw(st.integers(0, len(row) - 1))]
    if len(row) == 1:  # an alive row has its id only: a hostile one
        return section, [draw(hostile)]
    i = draw(st.integers(1, len(row) - 1))  # the id stays "bad": it never touches the good request
    row[i] = draw(hostile)
    return section, row


def _datagram(seq: int, rows: list[tuple[str, Any]]) -> bytes:
    doc: dict[str, Any] = {"v": 1, "kind": "proxy", "pid": 7, "seq": seq, "wall": NOW_S}
    for section, row in rows:
        doc.setdefault(section, []).append(row)
    return json.dumps(doc).encode()


def _receiver() -> ProxyWireReceiver:
    return ProxyWireReceiver(lambda unix_s: unix_s - NOW_S + 100.0, wall=lambda: NOW_S, hold_s=0.5)


@settings(max_examples=150, deadline=None)
@given(bad=st.lists(bad_row(), max_size=6), where=st.lists(st.integers(0, 5), max_size=6))
def test_bad_rows_next_to_a_good_request_cost_it_nothing(
    bad: list[tuple[str, Any]], where: list[int]
) -> None:
    rows = list(GOOD)
    for (section, row), k in zip(bad, where + [0] * len(bad), strict=False):
        rows.insert(min(k, len(rows)), (section, row))
    rx = _receiver()
    rx.feed(_datagram(0, rows))
    events, infos = rx.due(105.0)
    (good,) = [i for i in infos if i.request_id == "good"]
    assert good.end_s is not None and (good.prompt_tokens, good.output_tokens) == (12, 3)
    assert [e.request_id for e in events if e.request_id == "good"] == ["good"] * 3
    assert set(rx.counts) <= COUNTERS, set(rx.counts) - COUNTERS
    for e in events:
        assert math.isfinite(e.t0_s) and math.isfinite(e.t1_s) and e.t0_s <= e.t1_s
        assert all(math.isfinite(x) and x >= 0 for x in (e.units, e.steps, e.context_tokens))


@settings(max_examples=150, deadline=None)
@given(data=datagram_bytes)
def test_any_bytes_as_a_proxy_datagram_are_counted_never_raised(data: bytes) -> None:
    rx = _receiver()
    rx.feed(data)
    rx.due(105.0)
    assert sum(rx.counts.values()) >= 1 and set(rx.counts) <= COUNTERS
