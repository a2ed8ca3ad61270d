"""The scheduler hook's wire (v2): round trip, splitting, and every malformed input rejected."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.contracts.scheduler_wire import (
    MAX_DATAGRAM_BYTES,
    MAX_ID_CHARS,
    FinRow,
    Message,
    NewRow,
    StepRow,
    decode,
    encode,
)


def message(**kw: Any) -> Message:
    base: dict[str, Any] = {
        "pid": 42,
        "seq": 7,
        "wall": 1_764_400_000.25,
        "model": "tiny",
        "new": [NewRow(0, "chatcmpl-a", 12, 0.5), NewRow(1, "cmpl-b-0", 3, 0.25)],
        "steps": [
            StepRow(0.04, 0.03, [0, 1], [8, 3], [0, 0]),
            StepRow(0.03, 0.02, [0, 1], [4, 1], [8, 3]),
        ],
        "fin": [FinRow(1, 2, "length")],
        "gone": [0],
    }
    base.update(kw)
    return Message(**base)


def raw(**kw: Any) -> bytes:
    m: dict[str, Any] = {"v": 2, "kind": "sched", "pid": 1, "seq": 0, "wall": 1000.0, "model": "m"}
    m.update(kw)
    return json.dumps(m).encode()


def test_a_message_round_trips_in_one_compact_datagram() -> None:
    m = message()
    (data,) = encode(m)
    assert b" " not in data.replace(b"cmpl-b-0", b"")  # compact separators
    assert decode(data) == m


def test_the_datagram_is_plain_json_of_the_message_and_a_reused_array_text_never_goes_stale() -> None:
    m = message(model='m"x', new=[NewRow(0, 'a"b', 3, 0.1)])
    (data,) = encode(m)
    plain = json.dumps({"v": 2, "kind": "sched", **m._asdict()})
    assert json.loads(data) == {k: x for k, x in json.loads(plain).items() if k != "renew"}  # none: left out
    again = message(renew=(NewRow(3, "chatcmpl-c", 5, 0.2),))
    (data,) = encode(again)
    assert json.loads(data) == json.loads(json.dumps({"v": 2, "kind": "sched", **again._asdict()}))
    idx = [0, 1]
    first = encode(message(steps=[StepRow(0.2, 0.1, idx, [1, 1], [5, 5])]))
    idx[1] = 9  # the same list object, changed: its text must not be reused
    second = encode(message(steps=[StepRow(0.2, 0.1, idx, [1, 1], [6, 6])]))
    assert decode(first[0]).steps[0].idx == [0, 1] and decode(second[0]).steps[0].idx == [0, 9]


def test_sections_may_be_absent() -> None:
    got = decode(raw())
    assert (got.new, got.renew, got.steps, got.fin, got.gone) == ([], (), [], [], [])


def test_a_long_message_splits_under_the_limit_with_consecutive_seqs_and_rows_in_order() -> None:
    n = 256
    new = [NewRow(i, f"chatcmpl-{i:040d}", 1000 + i, 0.1) for i in range(n)]
    steps = [
        StepRow(0.5 - s * 0.01, 0.49 - s * 0.01, list(range(n)), [1] * n, [1000 + s] * n) for s in range(40)
    ]
    fin = [FinRow(i, 40, "length") for i in range(n)]
    renew = tuple(NewRow(n + i, f"chatcmpl-r{i:039d}", 7, 0.2) for i in range(64))
    datagrams = encode(message(new=new, steps=steps, fin=fin, gone=[], renew=renew))
    assert len(datagrams) > 1
    assert all(len(d) <= MAX_DATAGRAM_BYTES for d in datagrams)
    parts = [decode(d) for d in datagrams]
    assert [p.seq for p in parts] == list(range(7, 7 + len(parts)))
    assert [r for p in parts for r in p.new] == new
    assert tuple(r for p in parts for r in p.renew) == renew
    assert [r for p in parts for r in p.steps] == steps
    assert [r for p in parts for r in p.fin] == fin
    first_step = next(i for i, p in enumerate(parts) if p.steps)
    assert all(not (p.new or p.renew) for p in parts[first_step + 1 :])  # every new row before the steps


def test_a_row_too_big_for_any_datagram_is_dropped_not_sent_broken() -> None:
    huge = StepRow(1.0, 0.5, list(range(20_000)), [1] * 20_000, [5] * 20_000)
    datagrams = encode(message(steps=[huge, StepRow(0.5, 0.4, [0], [1], [12])]))
    steps = [s for d in datagrams for s in decode(d).steps]
    assert steps == [StepRow(0.5, 0.4, [0], [1], [12])]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a jouletrace"),
        (raw(v=1), "not a jouletrace"),
        (raw(kind="plugin"), "not a jouletrace"),
        (raw(pid=-1), "pid"),
        (raw(pid=True), "pid"),
        (raw(seq=1.5), "seq"),
        (raw(seq=2**60), "seq"),
        (raw(wall="now"), "wall"),
        (b'{"v":2,"kind":"sched","pid":1,"seq":0,"wall":NaN}', "wall"),
        (b'{"v":2,"kind":"sched","pid":1,"seq":0,"wall":1e999}', "wall"),
        (raw(wall=10**400), "wall"),  # an int too large for a float: ValueError, not OverflowError
        (raw(new=[[0, "a", 3, -(10**400)]]), "arrival_ago_s"),
        (raw(steps=[[10**400, 0.1, [0], [1], [0]]]), "t0_ago_s"),
        (raw(model=7), "model"),
        (raw(model="m" * 300), "model"),
        (raw(new={"0": "a"}), "'new'"),
        (raw(new=[[0, "a", 3]]), "new row"),
        (raw(new=[[0, "", 3, 0.1]]), "request_id"),
        (raw(new=[[0, "a" * (MAX_ID_CHARS + 1), 3, 0.1]]), "request_id"),
        (raw(new=[[0, "a", -3, 0.1]]), "prompt_tokens"),
        (raw(new=[[0, "a", 2**40, 0.1]]), "prompt_tokens"),
        (raw(new=[[0, "a", 3, -0.1]]), "arrival_ago_s"),
        (raw(new=[["0", "a", 3, 0.1]]), "new idx"),
        (raw(steps=[[0.1, 0.2, [0], [1], [0]]]), "ends before"),
        (raw(steps=[[0.2, 0.1, [0, 1], [1], [0, 0]]]), "lengths"),
        (raw(steps=[[0.2, 0.1, [0], [1], [0], 9]]), "step row"),
        (raw(steps=[[0.2, 0.1, 0, [1], [0]]]), "'idx'"),
        (raw(steps=[[0.2, 0.1, [0], [-1], [0]]]), "scheduled"),
        (raw(steps=[[0.2, 0.1, [0], [1.0], [0]]]), "scheduled"),
        (raw(steps=[[0.2, 0.1, [0], [1], [None]]]), "computed_before"),
        (raw(steps=[[1e6, 0.1, [0], [1], [0]]]), "t0_ago_s"),
        (raw(steps=[[0.2, 0.1, [0] * 70_000, [1] * 70_000, [0] * 70_000]]), "too long"),
        (raw(fin=[[0, 3]]), "fin row"),
        (raw(fin=[[0, 3, 5]]), "reason"),
        (raw(fin=[[0, 3, "x" * 40]]), "reason"),
        (raw(gone=[-1]), "gone"),
        (raw(gone="0"), "'gone'"),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_malformed_datagrams_are_rejected_with_a_reason(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        decode(data)
