"""The proxy process's wire (v1): datagrams split under the size limit in order, the price sheet checked."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

import sidecar.proxy
from sidecar.attribution.fit import WORK
from sidecar.contracts.proxy_wire import (
    MAX_DATAGRAM_BYTES,
    PRICE_WORK,
    PROXY_COUNTS,
    Begin,
    Chunks,
    End,
    Message,
    PriceSheet,
    Usage,
    encode,
)


def _message(n: int) -> Message:
    begin = [
        Begin(f"req-{i:05d}", 1.5, "/v1/chat/completions", "m", True, None, "t", None, 10) for i in range(n)
    ]
    chunks = [Chunks(f"req-{i:05d}", 0, [123_456] * 40) for i in range(n)]
    usage = [Usage(f"req-{i:05d}", 10, 40) for i in range(n)]
    end = [End(f"req-{i:05d}", 0.01, "ok", 200, None) for i in range(n)]
    return Message(42, 7, 1_764_400_000.25, begin, chunks, usage, end, {"streams": n})


def test_a_small_message_is_one_datagram_with_every_section() -> None:
    (data,) = encode(_message(2))
    doc = json.loads(data)
    assert (doc["v"], doc["kind"], doc["pid"], doc["seq"], doc["counts"]) == (
        1,
        "proxy",
        42,
        7,
        {"streams": 2},
    )
    assert doc["begin"][0] == ["req-00000", 1.5, "/v1/chat/completions", "m", True, None, "t", None, 10]
    assert [len(doc[k]) for k in ("begin", "chunks", "usage", "end")] == [2, 2, 2, 2]


def test_a_long_message_is_split_in_order_under_the_limit_with_consecutive_numbers() -> None:
    datagrams = encode(_message(300))
    docs = [json.loads(d) for d in datagrams]
    assert len(datagrams) > 1 and all(len(d) <= MAX_DATAGRAM_BYTES for d in datagrams)
    assert [d["seq"] for d in docs] == list(range(7, 7 + len(docs)))
    order = [(k, row[0]) for d in docs for k in ("begin", "chunks", "usage", "end") for row in d[k]]
    assert len(order) == 1200 and order[:300] == [("begin", f"req-{i:05d}") for i in range(300)]
    assert order[-1] == ("end", "req-00299")  # every begin before its chunks, usage and end


def test_a_row_alone_over_the_limit_is_dropped() -> None:
    huge = Begin("x", 0.0, "/v1/completions", "m" * MAX_DATAGRAM_BYTES, False, None, None, None, 0)
    small = Usage("y", 1, 1)
    docs = [json.loads(d) for d in encode(Message(1, 0, 1.0, [huge], [], [small], []))]
    assert [d["usage"] for d in docs] == [[["y", 1, 1]]] and all(not d["begin"] for d in docs)


def test_the_price_sheet_round_trips_and_its_terms_are_the_fits() -> None:
    sheet = PriceSheet("measured", True, 50.0, 1.0, 0.1, 0.5, 0.001, 0.01, 0.9, 120.0, ((1e-4,) * 6,) * 6)
    assert PriceSheet.parse(json.loads(json.dumps(sheet.to_json()))) == sheet
    assert PRICE_WORK == WORK


def _sheet(**change: Any) -> dict[str, Any]:
    doc = PriceSheet("estimate", True, 10.0, r2=0.5, cov=((0.0,) * 6,) * 6).to_json()
    doc.update(change)
    return doc


@pytest.mark.parametrize(
    "doc",
    [
        [],
        _sheet(v=2),
        _sheet(source=""),
        _sheet(source=7),
        _sheet(fitted="yes"),
        _sheet(floor_w=None),
        _sheet(floor_w=True),
        _sheet(r2=math.inf),
        _sheet(j_per_step=10**400),
        _sheet(cov=[[0.0] * 6] * 5),
        _sheet(cov=[[0.0] * 5] * 6),
        _sheet(cov=[[0.0] * 6] * 5 + [[0.0] * 5 + [math.nan]]),
        _sheet(cov="diag"),
        _sheet(work=["steps"]),
    ],
)
def test_a_malformed_price_sheet_is_refused_saying_what(doc: Any) -> None:
    with pytest.raises(ValueError):
        PriceSheet.parse(doc)


def test_every_counter_the_proxy_process_adds_can_travel_on_the_wire() -> None:
    """The receiver keeps only :data:`PROXY_COUNTS`: a counter the proxy adds but the list lacks
    never reaches the sidecar's /metrics when the proxy runs as its own process (body_timeout,
    answer_too_deep, host and upstream_retried were missing). The in-sidecar book's own count is
    not the proxy process's."""
    added: set[str] = set()
    for path in Path(sidecar.proxy.__file__).parent.glob("*.py"):
        if path.name != "book.py":  # the sidecar's tap, not the proxy process
            added |= set(re.findall(r'counts\.add\("([a-z_]+)"', path.read_text()))
    assert added and added <= set(PROXY_COUNTS), sorted(added - set(PROXY_COUNTS))
