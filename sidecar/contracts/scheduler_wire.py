"""The scheduler hook's wire: every vLLM engine step's exact members, as compact JSON over UDP.

A **stable public format** (version 2). The scheduler hook
(``servers/vllm/scheduler_hook.py``) encodes with it inside vLLM; the sidecar's
:class:`sidecar.taps.vllm_hook.HookReceiver` decodes it (``feed(data, out)``);
anyone may encode their own engine's or simulator's steps with :func:`encode`
and feed them to the receiver. Stdlib only: it is imported inside vLLM.

One datagram is one UTF-8 JSON object, at most :data:`MAX_DATAGRAM_BYTES`::

    {"v": 2, "kind": "sched", "pid": 4242, "seq": 17, "wall": 1764400000.123, "model": "llama",
     "new":   [[idx, request_id, prompt_tokens, arrival_ago_s], ...],
     "renew": [[idx, request_id, prompt_tokens, arrival_ago_s], ...],
     "steps": [[t0_ago_s, t1_ago_s, [idx, ...], [scheduled_tokens, ...], [computed_before, ...]], ...],
     "fin":   [[idx, output_tokens, reason], ...],
     "gone":  [idx, ...]}

``pid``    the sender's process id; a new pid means the engine restarted (its
           requests in flight are gone).
``seq``    datagram number per pid, consecutive from 0 (a gap means lost datagrams).
``wall``   Unix time (s) when the datagram was built. Every ``*_ago_s`` is how
           long before ``wall`` something happened, on the sender's monotonic
           clock, so no clock offset between processes enters; a receiver
           places it at ``its_clock(wall) - ago``.
``model``  served model name.
``new``    requests seen for the first time: ``idx`` is a small integer that
           stands for ``request_id`` in every later row of this pid (never
           reused within a pid); ``prompt_tokens`` the prompt length;
           ``arrival_ago_s`` when the request arrived at the engine.
``renew``  ``new`` rows sent again, as they were, in the next :data:`RENEW_SENDS` messages
           after the first (while the request is in flight, never after its ``fin``
           or ``gone``): a receiver that has the row already ignores it; one whose
           first copy was lost (UDP) takes it, and its member's steps go under its
           own id; the steps in the lost datagram are lost (the receiver marks its
           record so). Optional: a receiver that does not know the key loses nothing.
``steps``  engine steps in order, each running from ``t0`` to ``t1`` (steps do
           not overlap), with three parallel arrays, one entry per member:
           its ``idx``, the tokens it had scheduled in the step (prompt chunk,
           recomputed tokens after preemption, one decode token, or decode +
           speculative tokens), and ``computed_before``: its tokens already in
           the KV cache before the step (computed earlier or prefix-cache
           hits). So a member's tokens sit at KV positions ``computed_before``
           .. ``computed_before + scheduled - 1``: prefill chunks, prefix-cache
           hits and recompute after preemption are exact.
``fin``    requests that finished in the engine: output tokens, finish reason
           (``stop``, ``length``, ``abort``, ...).
``gone``   requests that left without finishing (aborted by the client or the
           front end).

``new``, ``renew``, ``steps``, ``fin`` and ``gone`` may each be absent or empty. A request's
``new`` row comes in the same or an earlier datagram than its first step.
Limits (a decoder rejects the datagram otherwise): integers are JSON integers
(not booleans) in ``0 .. 2**53``; token counts ``<= 2**31``; times are finite,
``0 <= ago_s <= 86400`` and ``t0_ago_s >= t1_ago_s``; ``request_id``
1..:data:`MAX_ID_CHARS` characters, ``model`` and ``reason`` at most 256 and 32; at most
:data:`MAX_MEMBERS` members per step.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NamedTuple

from sidecar.contracts.json_checks import (
    MAX_INT,
    int_of,
    ints_of,
    list_of,
    row_of,
    seconds_of,
    str_of,
)
from sidecar.contracts.ports import HOOK_PORT

__all__ = [
    "DEFAULT_PORT",
    "KIND",
    "MAX_CLIENT_ID_CHARS",
    "MAX_DATAGRAM_BYTES",
    "MAX_ID_CHARS",
    "MAX_MEMBERS",
    "PARALLEL_CHILD",
    "RENEW_SENDS",
    "VERSION",
    "FinRow",
    "Message",
    "NewRow",
    "StepRow",
    "decode",
    "encode",
]

VERSION = 2
KIND = "sched"
DEFAULT_PORT = HOOK_PORT
MAX_DATAGRAM_BYTES = 60_000  # under the 64 KiB UDP limit on loopback
MAX_MEMBERS = 65_536
RENEW_SENDS = 3  # messages after a request's new row that carry the row again (renew)
_MAX_TOKENS = 2**31
# vLLM's id of a parallel-sampling child (n > 1): f"{index}_{parent id}"
# (vllm/v1/engine/parallel_sampling.py); the group is the parent's. The hook sends a child's
# ``new`` row as vLLM takes it in, before its first step; the receiver keeps the children as one.
PARALLEL_CHILD = re.compile(r"[0-9]{1,6}_((?:chat)?cmpl-.+)")
MAX_CLIENT_ID_CHARS = 256  # a client's request id: the sidecar's limit (sidecar.taps.validate.Limits)
# vLLM's id of a request: the client's id and what vLLM adds to it, at most a parallel-sampling
# child's ``<index>_`` (7), a prefix (``chatcmpl-``: 9) and an input's number (``-0``: 2). The
# sidecar bounds the client's id it names (sidecar.taps.vllm_span_format.checked_id).
MAX_ID_CHARS = MAX_CLIENT_ID_CHARS + 7 + 9 + 2


class NewRow(NamedTuple):
    idx: int
    request_id: str
    prompt_tokens: int
    arrival_ago_s: float


class StepRow(NamedTuple):
    t0_ago_s: float
    t1_ago_s: float
    idx: list[int]
    scheduled: list[int]
    computed_before: list[int]


class FinRow(NamedTuple):
    idx: int
    output_tokens: int
    reason: str


class Message(NamedTuple):
    pid: int
    seq: int
    wall: float
    model: str
    new: list[NewRow]
    steps: list[StepRow]
    fin: list[FinRow]
    gone: list[int]
    renew: tuple[NewRow, ...] = ()  # new rows sent again (the wire's "renew")


_SECTIONS = ("new", "renew", "steps", "fin", "gone")  # a row is sent in this order


def encode(message: Message) -> list[bytes]:
    """:func:`split`'s datagrams."""
    return split(message)[0]


def split(message: Message) -> tuple[list[bytes], int]:
    """``message`` as datagrams with ``seq``, ``seq + 1``, ...; rows kept in order; and how many
    rows were dropped.

    Usually one datagram; a long message is split between rows (``new`` rows
    first, then those sent again, steps, finishes, aborts), each part under the size limit. The
    sender advances its ``seq`` by the number of datagrams. A single row that alone exceeds the
    limit is dropped and counted: a step of some thousands of members (its three columns take
    ~15 bytes a member at six-digit indices, so ~4,000 fill a datagram; ``--max-num-seqs`` bounds
    a step's members).
    """
    head: dict[str, Any] = {
        "v": VERSION,
        "kind": KIND,
        "pid": message.pid,
        "seq": message.seq,
        "wall": message.wall,
        "model": message.model,
    }
    data = _whole(head, message)
    if len(data) <= MAX_DATAGRAM_BYTES:
        return [data], 0
    budget = MAX_DATAGRAM_BYTES - len(_dumps(dict(head, seq=MAX_INT, **{k: [] for k in _SECTIONS})))
    parts: list[dict[str, list[Any]]] = [{k: [] for k in _SECTIONS}]
    used = dropped = 0
    for key in _SECTIONS:
        for row in getattr(message, key):
            size = len(_dumps(row)) + 1
            if size > budget:
                dropped += 1
                continue
            if used + size > budget:
                parts.append({k: [] for k in _SECTIONS})
                used = 0
            parts[-1][key].append(row)
            used += size
    return [_dumps(dict(head, seq=message.seq + i, **part)) for i, part in enumerate(parts)], dropped


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


# The JSON text of the last array of each of a step's three columns: consecutive decode steps
# usually have the same members and the same scheduled tokens, so their text is reused.
_last_arrays: list[tuple[list[int], str]] = [([], "[]"), ([], "[]"), ([], "[]")]


def _array(values: list[int], column: int) -> str:
    last, text = _last_arrays[column]
    if values == last:
        return text
    text = json.dumps(values, separators=(",", ":"))
    _last_arrays[column] = (list(values), text)
    return text


def _whole(head: dict[str, Any], message: Message) -> bytes:
    """One datagram's JSON, the same as ``json.dumps`` of the message, step arrays reused when unchanged."""
    steps = ",".join(
        f"[{json.dumps(s.t0_ago_s, allow_nan=False)},{json.dumps(s.t1_ago_s, allow_nan=False)},"
        f"{_array(s.idx, 0)},{_array(s.scheduled, 1)},{_array(s.computed_before, 2)}]"
        for s in message.steps
    )
    parts = (
        _dumps(head)[:-1],
        b',"new":' + _dumps(message.new),
        b',"renew":' + _dumps(message.renew) if message.renew else b"",
        b',"steps":[' + steps.encode() + b"]",
        b',"fin":' + _dumps(message.fin),
        b',"gone":' + _dumps(message.gone) + b"}",
    )
    return b"".join(parts)


def decode(data: bytes) -> Message:
    """Parse and validate one datagram; ``ValueError`` (saying what) for anything malformed."""
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as err:  # not UTF-8 or JSON, an int of 4,300+ digits, "[[[[..."
        raise ValueError(f"not JSON: {err}") from err
    if not isinstance(raw, dict) or raw.get("v") != VERSION or raw.get("kind") != KIND:
        raise ValueError("not a jouletrace v2 scheduler message")
    wall = seconds_of(raw.get("wall"), "wall", 0.0, math.inf)
    return Message(
        pid=int_of(raw.get("pid"), "pid"),
        seq=int_of(raw.get("seq"), "seq"),
        wall=wall,
        model=str_of(raw.get("model", ""), "model", 0, 256),
        new=[_new(r) for r in list_of(raw.get("new", []), "new")],
        renew=tuple(_new(r) for r in list_of(raw.get("renew", []), "renew")),
        steps=[_step(r) for r in list_of(raw.get("steps", []), "steps")],
        fin=[_fin(r) for r in list_of(raw.get("fin", []), "fin")],
        gone=ints_of(list_of(raw.get("gone", []), "gone"), "gone idx", MAX_INT),
    )


def _new(row: Any) -> NewRow:
    idx, request_id, prompt, ago = row_of(row, 4, "new")
    return NewRow(
        int_of(idx, "new idx"),
        str_of(request_id, "request_id", 1, MAX_ID_CHARS),
        int_of(prompt, "prompt_tokens", _MAX_TOKENS),
        seconds_of(ago, "arrival_ago_s"),
    )


def _step(row: Any) -> StepRow:
    t0, t1, idx, scheduled, before = row_of(row, 5, "step")
    t0_ago, t1_ago = seconds_of(t0, "t0_ago_s"), seconds_of(t1, "t1_ago_s")
    if t0_ago < t1_ago:
        raise ValueError("step ends before it starts (t0_ago_s < t1_ago_s)")
    arrays = [
        list_of(a, name) for a, name in ((idx, "idx"), (scheduled, "scheduled"), (before, "computed_before"))
    ]
    n = len(arrays[0])
    if n > MAX_MEMBERS or any(len(a) != n for a in arrays):
        raise ValueError("step arrays of different lengths (or too long)")
    return StepRow(
        t0_ago,
        t1_ago,
        ints_of(arrays[0], "member idx", MAX_INT),
        ints_of(arrays[1], "scheduled", _MAX_TOKENS),
        ints_of(arrays[2], "computed_before", _MAX_TOKENS),
    )


def _fin(row: Any) -> FinRow:
    idx, output, reason = row_of(row, 3, "fin")
    return FinRow(
        int_of(idx, "fin idx"), int_of(output, "output_tokens", _MAX_TOKENS), str_of(reason, "reason", 0, 32)
    )
