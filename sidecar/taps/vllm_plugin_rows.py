"""The plugin datagram's parts, checked one by one (:mod:`.validate`) into typed rows.

Each function takes one raw part of a decoded datagram (format:
:mod:`sidecar.contracts.vllm_wire`) and returns a typed row, or raises
:class:`~sidecar.taps.validate.Rejected` naming why; nothing here has state, so
a rejected row changes nothing. Units: seconds, tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.taps import validate as v
from sidecar.taps.vllm_span_format import checked_id

__all__ = [
    "FinishRow",
    "IterationRow",
    "StartRow",
    "parse_finish",
    "parse_iteration",
    "parse_sched",
    "parse_start",
]

_MAX_REASON_CHARS = 64
_MAX_REQUESTS = 1e7  # running / waiting requests of one server


@dataclass(frozen=True, slots=True)
class IterationRow:
    """``it``: how long ago the step ended, tokens generated and prompt tokens (computed + cached)."""

    end_ago_s: float
    generation_tokens: int
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class StartRow:
    """A request whose first token came in this iteration."""

    request_id: str
    prompt_tokens: int
    computed_tokens: int
    prefill_s: float


@dataclass(frozen=True, slots=True)
class FinishRow:
    """A finished request (``raw_id`` is vLLM's id, ``request_id`` the client's)."""

    raw_id: str
    request_id: str
    prompt_tokens: int
    generation_tokens: int
    prefill_s: float
    decode_s: float
    e2e_s: float
    reason: str


def _field(row: list[Any], i: int, what: str) -> Any:
    if not isinstance(row, list):  # a string, object, number or null where a row goes
        raise v.Rejected("malformed", f"{what}: row is a {type(row).__name__}, not a list")
    if i >= len(row):
        raise v.Rejected("malformed", f"{what}: row has {len(row)} fields, needs more than {i}")
    return row[i]


def _id(row: list[Any], what: str) -> tuple[str, str]:
    return checked_id(_field(row, 0, what), f"{what} id")


def parse_iteration(it: list[Any]) -> IterationRow:
    """``[end_ago, generation_tokens, prompt_computed, prompt_cached?, preempted?]``."""
    computed = v.tokens(_field(it, 2, "it"), "it prompt_computed")
    cached = v.tokens(it[3], "it prompt_cached") if len(it) > 3 else 0
    return IterationRow(
        end_ago_s=v.duration_s(_field(it, 0, "it"), "it end_ago"),
        generation_tokens=v.tokens(_field(it, 1, "it"), "it generation_tokens"),
        prompt_tokens=computed + cached,
    )


def parse_start(row: list[Any]) -> StartRow:
    """``[request_id, prompt_tokens, computed_tokens, prefill_s]``."""
    _, request_id = _id(row, "start")
    prompt = v.tokens(_field(row, 1, "start"), "start prompt_tokens")
    computed = v.tokens(_field(row, 2, "start"), "start computed_tokens")
    if computed > prompt:
        raise v.Rejected(
            "out_of_range", f"start {request_id!r}: {computed} computed of {prompt} prompt tokens"
        )
    return StartRow(request_id, prompt, computed, v.duration_s(_field(row, 3, "start"), "start prefill_s"))


def parse_finish(row: list[Any]) -> FinishRow:
    """``[request_id, prompt, generation, queued_s, prefill_s, decode_s, e2e_s, finish_reason?]``."""
    raw, request_id = _id(row, "fin")
    v.duration_s(_field(row, 3, "fin"), "fin queued_s")
    reason = row[7] if len(row) > 7 else ""
    if not isinstance(reason, str) or len(reason) > _MAX_REASON_CHARS or not reason.isprintable():
        raise v.Rejected("malformed", f"fin {request_id!r}: bad finish reason")
    return FinishRow(
        raw,
        request_id,
        prompt_tokens=v.tokens(_field(row, 1, "fin"), "fin prompt_tokens"),
        generation_tokens=v.tokens(_field(row, 2, "fin"), "fin generation_tokens"),
        prefill_s=v.duration_s(_field(row, 4, "fin"), "fin prefill_s"),
        decode_s=v.duration_s(_field(row, 5, "fin"), "fin decode_s"),
        e2e_s=v.duration_s(_field(row, 6, "fin"), "fin e2e_s"),
        reason=reason,
    )


def parse_sched(sched: Any) -> tuple[float, float, float]:
    """``[running, waiting, kv_cache_usage (0..1)]``."""
    if not isinstance(sched, list) or len(sched) < 3:
        raise v.Rejected("malformed", "sched: expected [running, waiting, kv_cache_usage]")
    return (
        v.count(sched[0], "sched running", _MAX_REQUESTS),
        v.count(sched[1], "sched waiting", _MAX_REQUESTS),
        v.count(sched[2], "sched kv_cache_usage", 1.0),
    )
