"""Hostile scheduler-hook datagrams: a poison value in any field rejects that row (or, in the
header, that datagram), counted by reason; the good rows and datagrams next to it are kept."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from sidecar.attribution.events import StepBatch
from sidecar.taps.spans import TapOutput
from sidecar.taps.vllm_hook import HookReceiver

WALL = 1000.0
HUGE = "1" + "0" * 400  # an integer too large for a float
POISON = [
    ("Infinity", "not_finite"),
    ("-Infinity", "not_finite"),
    ("NaN", "not_finite"),
    ("1e400", "not_finite"),
    ("-7", "negative"),
    ('"abc"', "wrong_type"),
    ("null", "wrong_type"),
    ("true", "wrong_type"),
]


def raw(
    seq: int | str, *, pid: str = "7", wall: str = "1000.0", model: str = '"tiny"', **parts: Any
) -> bytes:
    """A datagram as text, so values JSON cannot write (Infinity, 1e400, 10**400) can be spliced in."""
    head = f'"v":2,"kind":"sched","pid":{pid},"seq":{seq},"wall":{wall},"model":{model}'
    body = "".join(f',"{k}":{v if isinstance(v, str) else json.dumps(v)}' for k, v in parts.items())
    return ("{" + head + body + "}").encode()


def receiver(**kw: Any) -> HookReceiver:
    return HookReceiver(lambda unix_s: unix_s - 900.0, wall=lambda: WALL, **kw)


NEW = '[0,"chatcmpl-good",5,1.0],[2,"chatcmpl-good2",5,1.0]'


def step_ids(out: TapOutput) -> list[tuple[str, ...]]:
    return [e.request_ids for e in out.events if isinstance(e, StepBatch) and e.steps == 1.0]


def rejected(rx: HookReceiver) -> dict[str, int]:
    return {k: n for k, n in rx.counts.items() if k.startswith("rejected_") and n}


@pytest.mark.parametrize(("bad", "reason"), POISON)
@pytest.mark.parametrize("field", range(4))
@pytest.mark.parametrize("section", ["new", "renew"])
def test_a_poison_value_in_a_new_row_rejects_that_request_only(
    bad: str, reason: str, field: int, section: str
) -> None:
    row = ["1", '"chatcmpl-bad"', "5", "1.0"]
    row[field] = bad
    if field == 1:  # a request id: anything but a printable non-empty string is a bad id
        row[1], reason = ('""' if bad == '"abc"' else bad), "bad_id"
    rx, out = receiver(), TapOutput()
    steps = "[[0.5,0.4,[0,1,2],[5,5,5],[0,0,0]]]"
    rx.feed(raw(0, **{section: f"[{NEW},[{','.join(row)}]]"}, steps=steps), out)  # renew: new rows sent again
    # the bad request never joined: its member is unknown, adopted under a name of its own (its share
    # of the step is its own, not its neighbours')
    assert step_ids(out) == [("good", "unknown-7-1", "good2")]
    assert rejected(rx) == {f"rejected_{reason}": 1} and rx.counts["unknown_member"] == 1
    assert rx.claims("good") and not rx.claims("bad")


@pytest.mark.parametrize(("bad", "reason"), [*POISON, ("0.5", "wrong_type"), (HUGE, "out_of_range")])
@pytest.mark.parametrize("column", range(3))
def test_a_poison_value_in_a_step_column_rejects_that_step_only(bad: str, reason: str, column: int) -> None:
    cols = ["[0,2]", "[1,1]", "[5,5]"]
    cols[column] = f"[0,{bad}]"
    rx, out = receiver(), TapOutput()
    steps = f"[[0.3,0.2,[0,2],[5,5],[0,0]],[0.2,0.1,{','.join(cols)}],[0.1,0.0,[0,2],[1,1],[6,6]]]"
    rx.feed(raw(0, new=f"[{NEW}]", steps=steps), out)
    assert step_ids(out) == [("good", "good2"), ("good", "good2")]
    assert rejected(rx) == {f"rejected_{reason}": 1} and rx.counts["steps"] == 2


@pytest.mark.parametrize(("bad", "reason"), [*POISON, ("90000", "out_of_range")])
@pytest.mark.parametrize("field", range(2))
def test_a_poison_step_time_rejects_that_step_only(bad: str, reason: str, field: int) -> None:
    times = ["0.2", "0.1"]
    times[field] = bad
    rx, out = receiver(), TapOutput()
    steps = (
        f"[[0.3,0.2,[0,2],[5,5],[0,0]],[{times[0]},{times[1]},[0,2],[1,1],[5,5]],[0.1,0.0,[0,2],[1,1],[6,6]]]"
    )
    rx.feed(raw(0, new=f"[{NEW}]", steps=steps), out)
    assert step_ids(out) == [("good", "good2"), ("good", "good2")]
    assert rejected(rx) == {f"rejected_{reason}": 1}


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        ("[0.1,0.2,[0],[1],[5]]", "end_before_start"),  # ends before it starts
        ("[0.2,0.1,[0,2],[1],[5,5]]", "malformed"),  # columns of different lengths
        ("[0.2,0.1,[0],[1]]", "malformed"),  # a field missing
        ('[0.2,0.1,"0",[1],[5]]', "malformed"),  # a column that is not a list
        ("7", "malformed"),
        (f"[0.2,0.1,{list(range(70_000))},{[1] * 70_000},{[0] * 70_000}]", "out_of_range"),  # too many
    ],
)
def test_a_malformed_step_rejects_that_step_only(step: str, reason: str) -> None:
    rx, out = receiver(), TapOutput()
    steps = f"[[0.3,0.2,[0,2],[5,5],[0,0]],{step},[0.1,0.0,[0,2],[1,1],[5,5]]]"
    rx.feed(raw(0, new=f"[{NEW}]", steps=steps), out)
    assert step_ids(out) == [("good", "good2"), ("good", "good2")]
    assert rejected(rx) == {f"rejected_{reason}": 1}


@pytest.mark.parametrize(("bad", "reason"), [*POISON, ("1e30", "out_of_range")])
@pytest.mark.parametrize("field", range(3))
def test_a_poison_value_in_a_fin_row_rejects_that_finish_only(bad: str, reason: str, field: int) -> None:
    row = ["0", "3", '"stop"']
    row[field] = bad
    if field == 0 and bad == "1e30":
        reason = "wrong_type"  # an idx is a JSON integer
    if field == 2:  # a reason is a short printable string
        row[2], reason = ('"' + "x" * 40 + '"' if bad == '"abc"' else bad), "malformed"
    rx, out = receiver(), TapOutput()
    rx.feed(raw(0, new=f"[{NEW}]", steps="[[0.3,0.2,[0,2],[5,5],[0,0]]]"), out)
    rx.feed(raw(1, fin=f'[[{",".join(row)}],[2,1,"length"]]'), out)
    assert [i.request_id for i in out.infos] == ["good2"]
    assert rejected(rx) == {f"rejected_{reason}": 1}


@pytest.mark.parametrize(("bad", "reason"), POISON)
def test_a_poison_gone_entry_is_rejected_and_the_next_one_still_ends(bad: str, reason: str) -> None:
    rx, out = receiver(), TapOutput()
    rx.feed(raw(0, new=f"[{NEW}]", steps="[[0.3,0.2,[0,2],[5,5],[0,0]]]"), out)
    rx.feed(raw(1, gone=f"[{bad},2]"), out)
    assert [(i.request_id, i.attributes["finish_reason"]) for i in out.infos] == [("good2", "abort")]
    assert rejected(rx) == {f"rejected_{reason}": 1}


@pytest.mark.parametrize(
    ("field", "bad", "reason"),
    [
        *(("pid", b, r) for b, r in POISON),
        *(("seq", b, r) for b, r in POISON),
        ("pid", HUGE, "out_of_range"),
        ("seq", HUGE, "out_of_range"),
        ("seq", "1.5", "wrong_type"),
        *(("wall", b, r) for b, r in POISON if b not in ("-7",)),
        ("wall", HUGE, "not_finite"),
        ("wall", "4102444800.0", "bad_time"),  # the year 2100
        ("wall", "-100000.0", "bad_time"),
    ],
)
def test_a_datagram_whose_header_is_poison_is_rejected_whole_and_the_next_one_counts(
    field: str, bad: str, reason: str
) -> None:
    rx, out = receiver(), TapOutput()
    header = {"pid": "7", "wall": "1000.0", field: bad}
    seq = header.pop("seq", "0")
    rx.feed(raw(seq, **header, new=f"[{NEW}]", steps="[[0.3,0.2,[0,2],[5,5],[0,0]]]"), out)
    assert out.events == [] and rejected(rx) == {f"rejected_{reason}": 1}
    rx.feed(raw(1, new=f"[{NEW}]", steps="[[0.3,0.2,[0,2],[5,5],[0,0]]]"), out)
    assert step_ids(out) == [("good", "good2")]


@pytest.mark.parametrize("model", ["7", "null", '"' + "m" * 300 + '"', '"a\\u0000b"', "[1]"])
def test_an_unusable_model_name_is_ignored_and_the_rows_still_count(model: str) -> None:
    rx, out = receiver(default_model="default"), TapOutput()
    rx.feed(raw(0, model=model, new=f"[{NEW}]", steps="[[0.3,0.2,[0,2],[5,5],[0,0]]]"), out)
    assert step_ids(out) == [("good", "good2")] and rx.model == "default"


@pytest.mark.parametrize("section", ["new", "renew", "steps", "fin", "gone"])
def test_a_section_that_is_not_a_list_is_rejected_and_the_other_sections_count(section: str) -> None:
    rx, out = receiver(), TapOutput()
    parts = {"new": f"[{NEW}]", "steps": "[[0.3,0.2,[0,2],[5,5],[0,0]]]", "fin": '[[0,3,"stop"]]'}
    parts[section] = '{"x":1}'
    rx.feed(raw(0, **parts), out)
    assert rx.counts["rejected_malformed"] == 1
    assert bool(step_ids(out)) == (section != "steps")  # no new rows: the step's members are adopted
    ended = {"new": ["unknown-7-0"], "fin": [], "steps": ["good"]}.get(section, ["good"])
    assert [i.request_id for i in out.infos] == ended


def test_one_poison_datagram_costs_no_other_datagram_of_the_drain_over_real_udp() -> None:
    """Good, poison (every field at once), garbage and good again: both good ones are used."""
    rx = HookReceiver(lambda unix_s: unix_s - 900.0, port=0, wall=time.time)
    port = rx.start()
    wall = f"{time.time():.6f}"
    poison = raw(
        1,
        wall=wall,
        model="NaN",
        new='[[Infinity,"x",1e400,NaN]]',
        steps="[[NaN,-1,[1e400],[Infinity],[-1]]]",
        fin="[[-1,NaN,7]]",
        gone=f"[{HUGE}]",
    )
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(
                raw(0, wall=wall, new=f"[{NEW}]", steps="[[0.3,0.2,[0,2],[5,5],[0,0]]]"), ("127.0.0.1", port)
            )
            s.sendto(poison, ("127.0.0.1", port))
            s.sendto(b"\xff\xfe garbage", ("127.0.0.1", port))
            s.sendto(
                raw(2, wall=wall, steps="[[0.1,0.0,[0,2],[1,1],[5,5]]]", fin='[[0,1,"stop"]]'),
                ("127.0.0.1", port),
            )
        events: list[object] = []
        infos: list[object] = []
        deadline = time.monotonic() + 3.0
        while rx.counts["received"] + rx.counts["malformed"] < 4 and time.monotonic() < deadline:
            e, i = rx.due(0.0)
            events += e
            infos += i
            time.sleep(0.01)
    finally:
        rx.stop()
    batches = [e for e in events if isinstance(e, StepBatch) and e.steps == 1.0]
    assert [b.request_ids for b in batches] == [("good", "good2"), ("good", "good2")]
    assert [getattr(i, "request_id", None) for i in infos] == ["good"]
    assert rx.counts["malformed"] == 1 and rx.counts["internal_errors"] == 0
    assert (
        sum(n for k, n in rx.counts.items() if k.startswith("rejected_")) == 4
    )  # one per bad row: new, step, fin, gone


def test_a_datagram_dated_after_it_was_read_is_taken_as_sent_then_and_counted() -> None:
    """Dated an hour ahead (a clock stepped back, or a forgery), its steps would hold their requests
    that long and then take a later window's energy."""
    rx, out = receiver(), TapOutput()  # reads at Unix 1000 (mono 100)
    rx.feed(raw(0, wall="4600.0", new=f"[{NEW}]", steps="[[0.2,0.1,[0,2],[5,5],[0,0]]]"), out)
    (step,) = [e for e in out.events if isinstance(e, StepBatch)]
    assert (step.t0_s, step.t1_s) == pytest.approx((99.8, 99.9))  # 0.2 and 0.1 s before it was read
    assert rx.counts["wall_ahead"] == 1


@pytest.mark.parametrize("where", ["seq", "pid", "new"])
def test_an_int_of_thousands_of_digits_is_a_malformed_datagram_and_the_next_one_is_kept(where: str) -> None:
    """json.loads refuses an int of over 4,300 digits with a plain ValueError, which the hook did not
    catch: the tick failed, and every datagram drained in it (the plugin's too) was lost."""
    long_int = "1" + "0" * 5000
    parts = {"seq": "0", "pid": "7", "new": f"[{NEW}]"}
    parts[where] = f"[[{long_int},1,5,1.0]]" if where == "new" else long_int
    rx, out = receiver(), TapOutput()
    rx.feed(raw(parts["seq"], pid=parts["pid"], new=parts["new"]), out)  # does not raise
    rx.feed(raw(1, new=f"[{NEW}]", steps="[[0.5,0.4,[0,2],[5,5],[0,0]]]"), out)
    assert rx.counts["malformed"] == 1 and rx.counts["internal_errors"] == 0
    assert step_ids(out) == [("good", "good2")]
