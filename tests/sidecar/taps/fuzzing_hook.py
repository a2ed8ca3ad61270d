"""Hypothesis strategies for the scheduler hook's wire (v2), and the checks every case must pass.

Shared by the tests (``test_fuzz.py``) and ``benchmarks/fuzz.py``. Four kinds of case:

* :func:`hook_streams`: a good engine run (``new`` rows, steps, ``fin`` rows encoded with
  :func:`sidecar.contracts.scheduler_wire.encode`, the encoder the hook uses) with bad
  datagrams slipped in between (a hostile header value, cut short, or foreign bytes):
  each bad one is refused and counted, and every good request finishes with its tokens;
* :func:`hook_rows`: the good run's datagrams also carry bad rows (a ``new``, step or
  ``fin`` row of another request with one field hostile): no good request is lost;
* :func:`hook_messages`: datagrams the decoder accepts but no engine would send (unknown,
  repeated or reused member indices, steps after a finish, far sequence jumps, any pid,
  dates far from now): nothing escapes ``feed``, every step batch passes its own check,
  and the loss counter moves by at most the restart window per datagram;
* any bytes at all (``check_hook_bytes``).
"""

from __future__ import annotations

import inspect
import json
import math
from typing import Any

from hypothesis import strategies as st

from sidecar.attribution.events import StepBatch
from sidecar.contracts.scheduler_wire import FinRow, Message, NewRow, StepRow, decode, encode
from sidecar.taps.spans import TapOutput
from sidecar.taps.vllm_hook import HookReceiver
from tests.sidecar.taps.fuzzing import NOW_S, hostile

__all__ = [
    "check_hook_bytes",
    "check_hook_message",
    "check_hook_rows",
    "check_hook_stream",
    "hook_messages",
    "hook_rows",
    "hook_streams",
]

_MAX_JUMP = 10_000  # the receiver's restart window (sidecar/taps/vllm_hook.py)
small = st.integers(min_value=0, max_value=4096)
ago = st.floats(min_value=0.0, max_value=5.0)


def _receiver() -> HookReceiver:
    """A receiver on the fake wall clock ``NOW_S`` (given as ``wall`` where it date-checks datagrams)."""
    kwargs: dict[str, Any] = {"port": 0}
    if "wall" in inspect.signature(HookReceiver).parameters:
        kwargs["wall"] = lambda: NOW_S
    return HookReceiver(lambda unix_s: unix_s - NOW_S, **kwargs)


# ---- a good run with bad datagrams in between -----------------------------------------------------
@st.composite
def _good_run(draw: st.DrawFn) -> tuple[list[bytes], dict[str, int]]:
    """A good engine run as datagrams, and each finished request's output tokens."""
    n = draw(st.integers(1, 6))
    prompts = [draw(st.integers(1, 2048)) for _ in range(n)]
    new = [NewRow(i, f"chatcmpl-good-h{i}", prompts[i], draw(ago)) for i in range(n)]
    done = [0] * n  # tokens in each request's KV cache
    steps: list[StepRow] = []
    t_ago = 5.0
    for _ in range(draw(st.integers(1, 6))):
        members = sorted(draw(st.sets(st.integers(0, n - 1), min_size=1)))
        k = [prompts[i] - done[i] if done[i] < prompts[i] else 1 for i in members]
        before = [done[i] for i in members]
        for i, ki in zip(members, k, strict=True):
            done[i] += ki
        t1 = t_ago - draw(st.floats(0.001, 0.1))
        steps.append(StepRow(t_ago, max(t1, 0.0), members, k, before))
        t_ago = max(t1 - draw(st.floats(0.0, 0.05)), 0.0)
    fin = [FinRow(i, max(done[i] - prompts[i] + 1, 1), "length") for i in range(n)]
    msgs = [  # in as many datagrams as the draw says, seq consecutive
        Message(4242, 0, NOW_S, "tiny", new, [], [], []),
        Message(4242, 1, NOW_S, "tiny", [], steps, [], []),
        Message(4242, 2, NOW_S, "tiny", [], [], fin, []),
    ]
    data = [d for m in msgs for d in encode(m)]
    return data, {f"good-h{i}": fin[i].output_tokens for i in range(n)}


@st.composite
def _bad_datagram(draw: st.DrawFn, good: bytes) -> bytes:
    """``good`` made unreadable: a hostile header value, cut short, or bytes of no format."""
    how = draw(st.sampled_from(["header", "header", "cut", "bytes"]))
    if how == "cut":
        return good[: draw(st.integers(0, len(good) - 1))]
    if how == "bytes":
        return draw(st.binary(max_size=256).filter(lambda b: not b.startswith(b"{")))
    msg = json.loads(good)
    msg[draw(st.sampled_from(["v", "kind", "pid", "seq", "wall"]))] = draw(hostile)
    data = json.dumps(msg).encode()
    try:
        decode(data)
    except (ValueError, OverflowError):  # OverflowError: an int too large for a float, as a time
        return data
    return good[: len(good) // 2]  # the hostile value happened to be a valid one: cut short instead


@st.composite
def hook_streams(draw: st.DrawFn) -> tuple[list[bytes], set[int], dict[str, int]]:
    """(datagrams in order, positions of the bad ones, good request id -> output tokens)."""
    good, finished = draw(_good_run())
    stream: list[bytes] = []
    bad: set[int] = set()
    for data in good:
        for _ in range(draw(st.integers(0, 2))):
            bad.add(len(stream))
            stream.append(draw(_bad_datagram(data)))
        stream.append(data)
    return stream, bad, finished


def _refused(rx: HookReceiver) -> int:
    return sum(n for k, n in rx.counts.items() if k == "malformed" or k.startswith("rejected_"))


def check_hook_stream(case: tuple[list[bytes], set[int], dict[str, int]]) -> None:
    """Each bad datagram is refused and counted (nothing else); every good request finishes, exactly."""
    stream, bad, finished = case
    rx, out = _receiver(), TapOutput()
    for data in stream:
        rx.feed(data, out)
    assert _refused(rx) == len(bad), (rx.counts, len(bad))
    assert rx.counts["restarts"] == 0 and rx.counts["lost"] == 0
    got = {i.request_id: i.output_tokens for i in out.infos}
    assert got == finished, f"lost or changed good requests: {finished} vs {got}"
    _check_batches(out)


@st.composite
def _bad_row(draw: st.DrawFn, section: str, j: int) -> list[object]:
    """A row for an unknown request (idx 1000 + j) with one field hostile."""
    row: list[object] = {
        "new": [1000 + j, f"chatcmpl-bad-h{j}", 10, 0.1],
        "steps": [0.2, 0.1, [1000 + j], [1], [10]],
        "fin": [1000 + j, 3, "length"],
    }[section]
    i = draw(st.integers(0, len(row) - 1))
    row[i] = draw(hostile)
    head = {"v": 2, "kind": "sched", "pid": 1, "seq": 0, "wall": NOW_S}
    try:
        decode(json.dumps({**head, section: [row]}).encode())
    except (ValueError, OverflowError):
        return row
    row[i] = None  # the hostile value happened to be a valid one (it could name a good request): spoil it
    return row


@st.composite
def hook_rows(draw: st.DrawFn) -> tuple[list[bytes], dict[str, int]]:
    """A good run whose datagrams also carry bad rows: (datagrams, good request id -> output tokens)."""
    good, finished = draw(_good_run())
    out: list[bytes] = []
    for j, data in enumerate(good):
        msg = json.loads(data)
        for section in ("new", "steps", "fin"):
            for k in range(draw(st.integers(0, 1))):
                rows = msg.setdefault(section, [])
                rows.insert(draw(st.integers(0, len(rows))), draw(_bad_row(section, 10 * j + k)))
        out.append(json.dumps(msg).encode())
    return out, finished


def check_hook_rows(case: tuple[list[bytes], dict[str, int]]) -> None:
    """No good request is lost next to a bad row of the same datagram; nothing escapes."""
    datagrams, finished = case
    rx, out = _receiver(), TapOutput()
    for data in datagrams:
        rx.feed(data, out)
    got = {i.request_id: i.output_tokens for i in out.infos if i.request_id.startswith("good-")}
    assert got == finished, f"lost good requests next to bad rows: {finished} vs {got}"
    _check_batches(out)


# ---- accepted but hostile --------------------------------------------------------------------------
wire_int = st.one_of(small, st.integers(0, 2**53), st.sampled_from([0, 1, 2**31, 2**53]))
ids = st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(["chatcmpl-", "cmpl-x-0", "a", "a"]))


@st.composite
def _step(draw: st.DrawFn) -> StepRow:
    n = draw(st.integers(0, 6))
    t1 = draw(st.floats(0.0, 86_400.0))
    t0 = draw(st.floats(t1, 86_400.0))
    members = [draw(st.one_of(st.integers(0, 5), wire_int)) for _ in range(n)]
    scheduled = [draw(st.integers(0, 2**31)) for _ in range(n)]
    before = [draw(st.integers(0, 2**31)) for _ in range(n)]
    return StepRow(t0, t1, members, scheduled, before)


@st.composite
def _message(draw: st.DrawFn) -> bytes:
    new = draw(
        st.lists(st.builds(NewRow, st.integers(0, 5), ids, wire_int, st.floats(0, 86_400.0)), max_size=4)
    )
    steps = draw(st.lists(_step(), max_size=4))
    fin = draw(st.lists(st.builds(FinRow, st.integers(0, 5), wire_int, st.text(max_size=32)), max_size=3))
    gone = draw(st.lists(st.integers(0, 6), max_size=3))
    pid = draw(st.sampled_from([1, 1, 1, 2, 2**53]))
    seq = draw(st.one_of(st.integers(0, 5), wire_int))
    wall = draw(st.one_of(st.just(NOW_S), st.floats(0.0, 1e300)))
    (data, *_) = encode(Message(pid, seq, wall, draw(st.text(max_size=8)), new, steps, fin, gone))
    return data


hook_messages = st.lists(_message(), min_size=1, max_size=6)


def check_hook_message(datagrams: list[bytes]) -> None:
    """Accepted datagrams no engine would send: nothing escapes, batches are sound, losses bounded."""
    rx, out = _receiver(), TapOutput()
    for data in datagrams:
        rx.feed(data, out)
    assert rx.counts["lost"] <= _MAX_JUMP * len(datagrams)
    _check_batches(out)
    for info in out.infos:
        assert info.request_id and info.output_tokens is not None and info.output_tokens >= 0


def check_hook_bytes(data: bytes) -> None:
    """Any bytes at all: counted, never raised."""
    rx = _receiver()
    rx.feed(data, TapOutput())
    assert rx.counts["received"] + rx.counts["malformed"] == 1


def _check_batches(out: TapOutput) -> None:
    for event in out.events:
        assert isinstance(event, StepBatch)
        event.check()
        assert math.isfinite(float(event.units.sum())) and math.isfinite(float(event.context_tokens.sum()))
