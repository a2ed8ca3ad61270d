"""The datagram format between the vLLM stat-logger plugin and the sidecar (stdlib only).

One UDP datagram per engine iteration (per ``record()`` call with stats),
compact JSON, at most :data:`MAX_DATAGRAM_BYTES`. The plugin imports this module
inside vLLM, so it must stay free of numpy, grpc and the rest of the sidecar.

Keys (times in seconds; ``*_ago`` is how long before ``wall`` a thing happened,
measured on the plugin's monotonic clock, so no cross-process clock offset enters):

``v``      format version (1)
``pid``    the vLLM front-end process id (a new pid means vLLM restarted)
``seq``    message number per pid, from 0 (gaps mean lost datagrams)
``wall``   Unix time of the ``record()`` call
``model``  served model name
``it``     the iteration (an :class:`Iteration`), or absent on a scheduler-only heartbeat
``sched``  the scheduler's state (a :class:`Sched`)
``start``  requests whose prefill finished in this iteration (first token): :class:`Start` rows
``fin``    finished requests: :class:`Finish` rows
``gone``   (at most once a second) started requests that left vLLM without finishing (aborted)
``live``   true when the plugin sees per-request starts (``start`` is complete)

Rows travel as JSON arrays (compact); the named tuples below give their fields
names on both ends. A named tuple *is* a tuple, so the plugin passes them to
:func:`encode` as they are; the receiver reads a row with ``Finish.parse(row)``,
which converts the types and raises ``ValueError`` for a short or mistyped row.
Fields may be added at the end of a row only (older readers ignore them; a
newer reader of an older row gets the field's default).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

__all__ = ["MAX_DATAGRAM_BYTES", "VERSION", "Finish", "Iteration", "Sched", "Start", "decode", "encode"]

VERSION = 1
MAX_DATAGRAM_BYTES = 60_000  # under the 64 KiB UDP limit on loopback
_MAX_ROWS = 150  # rows of one list per datagram; more go into follow-up datagrams
_ROW_LISTS = ("start", "fin", "gone")  # lists of request rows: split over datagrams by size


class Iteration(NamedTuple):
    """``it``: one engine iteration's token counts."""

    end_ago_s: float  # how long before ``wall`` the iteration ended
    generation_tokens: int
    prompt_computed: int  # prompt tokens computed (prefill) in this iteration
    prompt_cached: int = 0  # prompt tokens served from the prefix cache
    preempted: int = 0  # requests preempted in this iteration

    @classmethod
    def parse(cls, row: Any) -> Iteration:
        """A received ``it`` array; ``ValueError`` if it is short or mistyped."""
        values = _fields(row, 3, 5)
        return cls(float(values[0]), *(int(v) for v in values[1:]))


class Sched(NamedTuple):
    """``sched``: the scheduler's load after the iteration."""

    running: int
    waiting: int
    kv_cache_usage: float  # 0..1

    @classmethod
    def parse(cls, row: Any) -> Sched:
        """A received ``sched`` array; ``ValueError`` if it is short or mistyped."""
        running, waiting, kv = _fields(row, 3, 3)
        return cls(int(running), int(waiting), float(kv))


class Start(NamedTuple):
    """A ``start`` row: a request whose prefill finished in this iteration."""

    request_id: str
    prompt_tokens: int
    computed_tokens: int  # prompt tokens computed (the rest came from the prefix cache)
    prefill_s: float

    @classmethod
    def parse(cls, row: Any) -> Start:
        """A received ``start`` row; ``ValueError`` if it is short or mistyped."""
        request_id, prompt, computed, prefill_s = _fields(row, 4, 4)
        return cls(str(request_id), int(prompt), int(computed), float(prefill_s))


class Finish(NamedTuple):
    """A ``fin`` row: a finished request and its timings."""

    request_id: str
    prompt_tokens: int
    generation_tokens: int
    queued_s: float
    prefill_s: float
    decode_s: float
    e2e_s: float
    finish_reason: str = ""  # stop, length, abort, ...

    @classmethod
    def parse(cls, row: Any) -> Finish:
        """A received ``fin`` row; ``ValueError`` if it is short or mistyped."""
        values = _fields(row, 7, 8)
        request_id, prompt, generated, queued_s, prefill_s, decode_s, e2e_s = values[:7]
        reason = str(values[7]) if len(values) > 7 else ""
        times = (float(queued_s), float(prefill_s), float(decode_s), float(e2e_s))
        return cls(str(request_id), int(prompt), int(generated), *times, reason)


def _fields(row: Any, least: int, most: int) -> list[Any]:
    """The first ``most`` items of a row that must have at least ``least``; no bools or nulls."""
    if not isinstance(row, list | tuple) or len(row) < least:
        raise ValueError(f"expected a row of at least {least} fields, got {row!r:.80}")
    values = list(row[:most])
    if any(v is None or isinstance(v, bool | dict | list) for v in values):
        raise ValueError(f"a row field is null, boolean or nested: {row!r:.80}")
    return values


def encode(message: dict[str, Any]) -> list[bytes]:
    """One message as one or more datagrams: its ``start``, ``fin`` and ``gone`` rows filled into
    each by size (at most :data:`_MAX_ROWS` a list) under :data:`MAX_DATAGRAM_BYTES`.

    Follow-up datagrams carry only their rows (no ``it``), so iteration totals are counted once.
    A row that alone exceeds the limit (an id of tens of KB, which the sidecar refuses anyway) is
    dropped, never its neighbours: rows cut into fixed groups of 150 dropped a whole group, the
    first datagram's ``it`` with it, where 150 ids of multi-byte characters passed the limit.
    """
    lists = {key: list(message.get(key) or []) for key in _ROW_LISTS}
    head = {k: v for k, v in message.items() if k not in _ROW_LISTS}
    ids = {k: v for k, v in head.items() if k in ("v", "pid", "seq", "wall", "model")}
    sizes = {key: [len(_dumps(row)) for row in rows] for key, rows in lists.items()}
    empty: dict[str, list[Any]] = {key: [] for key in _ROW_LISTS}
    most = MAX_DATAGRAM_BYTES - len(_dumps({**ids, **empty}))  # what one row may take at most
    out: list[bytes] = []
    at = dict.fromkeys(_ROW_LISTS, 0)
    first = True
    while first or any(at[key] < len(rows) for key, rows in lists.items()):
        part: dict[str, Any] = dict(head if first else ids)
        room = MAX_DATAGRAM_BYTES - len(_dumps({**part, **empty}))
        for key, rows in lists.items():
            taken: list[Any] = []
            while at[key] < len(rows) and len(taken) < _MAX_ROWS:
                size = sizes[key][at[key]]
                if size > most:  # too big for any datagram: dropped alone
                    at[key] += 1
                    continue
                size += 1 if taken else 0  # its comma
                if size > room:
                    break
                taken.append(rows[at[key]])
                room -= size
                at[key] += 1
            part[key] = taken
        out.append(_dumps(part))
        first = False
    return out


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def decode(data: bytes) -> dict[str, Any]:
    """Parse one datagram; raises ``ValueError`` for anything that is not a v1 message (its header:
    version, pid, seq, wall). Its sections and rows (``start``, ``fin``, ``it``, ...) are the
    receiver's to check, each on its own: a bad row must not cost the good rows beside it."""
    try:
        message = json.loads(data)
    except (ValueError, RecursionError) as err:  # not UTF-8 or JSON, an int of 4,300+ digits, "[[[[..."
        raise ValueError(f"not JSON: {err}") from err
    if not isinstance(message, dict) or message.get("v") != VERSION:
        raise ValueError("not a jouletrace v1 message")
    for key, kind in (("pid", int), ("seq", int), ("wall", (int, float))):
        if not isinstance(message.get(key), kind):
            raise ValueError(f"bad or missing {key!r}")
    return message
