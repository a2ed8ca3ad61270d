"""The proxy process's datagram, checked part by part (:mod:`.validate`) into typed rows.

Each function takes one raw part of a parsed datagram (format:
:mod:`sidecar.contracts.proxy_wire`) and returns it typed, or raises
:class:`~sidecar.taps.validate.Rejected` naming why; nothing here has state, so
a rejected part changes nothing and the receiver goes on with the next one.
Units: seconds, tokens; the proxy's counters are counts of events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.contracts.proxy_wire import (
    COMPLETION_PATHS,
    HEARTBEAT_S,
    KIND,
    MAX_AGO_US,
    MAX_CHUNKS_PER_ROW,
    OUTCOMES,
    PROXY_COUNTS,
    TRACEPARENT,
    VERSION,
    Alive,
    Begin,
    Chunks,
    End,
    Usage,
)
from sidecar.taps import validate as v
from sidecar.taps.vllm_hook_rows import index

__all__ = [
    "MAX_COUNT_STEP",
    "Head",
    "count_refusal",
    "count_value",
    "parse_alive",
    "parse_begin",
    "parse_chunks",
    "parse_counts",
    "parse_end",
    "parse_head",
    "parse_usage",
]

_MAX_PROMPT_CHARS = 1e9
_KNOWN_COUNTS = frozenset(PROXY_COUNTS)
# How far one of the proxy's counters may move from one of its datagrams to the next. A counter
# counts requests, chunks (malformed_sse: one a chunk at most) or datagrams, and the proxy sends a
# datagram at least every HEARTBEAT_S (every 0.1 s while it has rows), so a step spans about a
# second of one event loop's work: at most ~100,000 chunks. Ten times that a second: no real proxy
# comes near it (only minutes of lost datagrams at full load would), and one forged datagram adds no
# more than it.
_MAX_EVENTS_PER_S = 1_000_000
MAX_COUNT_STEP = round(_MAX_EVENTS_PER_S * HEARTBEAT_S)


@dataclass(frozen=True, slots=True)
class Head:
    """The datagram's sender, number and date (Unix s)."""

    pid: int
    seq: int
    wall_s: float  # at most the sidecar's clock when read (validate.sent_unix_s)
    ahead_s: float  # how far after that clock the datagram said it was sent (0: not)


def parse_head(raw: Any, now_unix_s: float) -> Head:
    """``v``, ``kind``, ``pid``, ``seq``, ``wall`` (within the skew limit of now)."""
    if not isinstance(raw, dict) or raw.get("v") != VERSION or raw.get("kind") != KIND:
        raise v.Rejected("malformed", "not a jouletrace v1 proxy message")
    wall_s, ahead_s = v.sent_unix_s(raw.get("wall"), "wall", now_unix_s)
    return Head(
        pid=index(raw.get("pid"), "pid"),
        seq=index(raw.get("seq"), "seq"),
        wall_s=wall_s,
        ahead_s=ahead_s,
    )


def _label(value: Any, what: str) -> str | None:
    """An optional printable id-like string (model, task, tenant): null, or at most 256 characters."""
    return None if value is None else v.request_id(value, what)


def parse_begin(row: Any) -> Begin:
    """``[request_id, arrival_ago_s, path, model, stream, task, tenant, traceparent, prompt_chars]``."""
    rid, ago, path, model, stream, task, tenant, traceparent, chars = v.fixed_row(row, 9, "begin")
    if path not in COMPLETION_PATHS:
        raise v.Rejected("malformed", f"begin: path {path!r:.40} is not a completions path")
    if not isinstance(stream, bool):
        raise v.Rejected("wrong_type", "begin: stream is not true or false")
    if traceparent is not None and not (isinstance(traceparent, str) and TRACEPARENT.fullmatch(traceparent)):
        raise v.Rejected("malformed", "begin: traceparent is not a W3C traceparent")
    return Begin(
        v.request_id(rid),
        v.duration_s(ago, "arrival_ago_s"),
        path,
        _label(model, "model"),
        stream,
        _label(task, "task"),
        _label(tenant, "tenant"),
        traceparent,
        int(v.count(chars, "prompt_chars", _MAX_PROMPT_CHARS)),
    )


def parse_chunks(row: Any) -> Chunks:
    """``[request_id, first, [ago_us, ...]]``: whole microseconds, in order (none above the one before)."""
    rid, first, agos = v.fixed_row(row, 3, "chunks")
    if not isinstance(agos, list) or len(agos) > MAX_CHUNKS_PER_ROW:
        raise v.Rejected("malformed", f"chunks: not a list of at most {MAX_CHUNKS_PER_ROW} times")
    if agos:  # checked at C speed: a proxy sends thousands a second
        if set(map(type, agos)) != {int}:
            raise v.Rejected("wrong_type", "chunks: a time is not a whole number of microseconds")
        if min(agos) < 0:
            raise v.Rejected("negative", "chunks: a time is negative")
        if max(agos) > MAX_AGO_US:
            raise v.Rejected("out_of_range", "chunks: a time is over a day ago")
        if sorted(agos, reverse=True) != agos:
            raise v.Rejected("end_before_start", "chunks: a chunk's time is before the one listed before it")
    return Chunks(v.request_id(rid), v.tokens(first, "first chunk"), agos)


def parse_usage(row: Any) -> Usage:
    """``[request_id, prompt_tokens, output_tokens]``."""
    rid, prompt, output = v.fixed_row(row, 3, "usage")
    return Usage(v.request_id(rid), v.tokens(prompt, "prompt_tokens"), v.tokens(output, "output_tokens"))


def parse_alive(row: Any) -> Alive:
    """``[request_id]``."""
    (rid,) = v.fixed_row(row, 1, "alive")
    return Alive(v.request_id(rid))


def parse_end(row: Any) -> End:
    """``[request_id, end_ago_s, outcome, status, response_model]``."""
    rid, ago, outcome, status, model = v.fixed_row(row, 5, "end")
    if outcome not in OUTCOMES:
        raise v.Rejected("malformed", f"end: outcome {outcome!r:.40} is not one of {OUTCOMES}")
    code = v.count(status, "status", 999)
    if not code.is_integer():
        raise v.Rejected("wrong_type", "end: status is not a whole number")
    return End(
        v.request_id(rid), v.duration_s(ago, "end_ago_s"), outcome, int(code), _label(model, "response_model")
    )


def parse_counts(raw: dict[str, Any]) -> dict[str, Any]:
    """The proxy's counters, values unchecked (:func:`count_value`, each on its own): known names only
    (a newer proxy's others are left out)."""
    counts = raw.get("counts", {})
    if not isinstance(counts, dict):
        raise v.Rejected("malformed", "counts: not an object")
    return {name: value for name, value in counts.items() if name in _KNOWN_COUNTS}


def count_value(name: str, value: Any) -> int:
    """One of the proxy's counters (events since it started): an integer in ``0..2**53``."""
    return index(value, f"count {name}")


def count_refusal(now: int, before: int) -> str | None:
    """Why a counter's move from ``before`` (its value in the sender's last datagram) to ``now`` is
    not a real step, as a ``rejected_<reason>`` reason of the receiver's own (:data:`.validate.REASONS`
    are about single values): a proxy's counters only grow (``count_backwards``), by at most
    :data:`MAX_COUNT_STEP` a datagram (``count_jump``). None: a real step."""
    if now < before:
        return "count_backwards"
    return "count_jump" if now - before > MAX_COUNT_STEP else None
