"""The scheduler hook's datagram, checked part by part (:mod:`.validate`) into typed rows and arrays.

Each function takes one raw part of a parsed datagram (format:
:mod:`sidecar.contracts.scheduler_wire`) and returns it typed, or raises
:class:`~sidecar.taps.validate.Rejected` naming why; nothing here has state, so
a rejected part changes nothing and the receiver goes on with the next one.
A step's three columns become numpy arrays at once (checked at C speed: a step
has hundreds of members), never one object per member. Units: seconds, tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sidecar.contracts.scheduler_wire import KIND, MAX_MEMBERS, VERSION, FinRow, NewRow
from sidecar.taps import validate as v
from sidecar.taps.vllm_span_format import vllm_id

__all__ = ["Head", "StepArrays", "parse_fin", "parse_gone", "parse_head", "parse_new", "parse_step"]

MAX_INDEX = 2**53  # the wire's bound on pid, seq and idx
_MAX_REASON_CHARS = 32
_MAX_MODEL_CHARS = 256


@dataclass(frozen=True, slots=True)
class Head:
    """The datagram's sender, number, date (Unix s) and model ('' when absent or unusable)."""

    pid: int
    seq: int
    wall_s: float  # at most the sidecar's clock when read (validate.sent_unix_s)
    ahead_s: float  # how far after that clock the datagram said it was sent (0: not)
    model: str


@dataclass(frozen=True, slots=True)
class StepArrays:
    """One step: ``[t0, t1]`` as seconds before ``wall`` and its members' columns."""

    t0_ago_s: float
    t1_ago_s: float
    idx: np.ndarray  # int64, the members' wire indices
    scheduled: np.ndarray  # int64 tokens
    before: np.ndarray  # int64 tokens already in the KV cache


def index(value: Any, what: str) -> int:
    """A JSON integer in ``0..2**53`` (pid, seq, idx; never a bool or a float)."""
    if type(value) is not int:
        raise _not_an_integer(value, what)
    if value < 0:
        raise v.Rejected("negative", f"{what}: {value} is negative")
    if value > MAX_INDEX:
        raise v.Rejected("out_of_range", f"{what}: over 2**53")
    return value


def _not_an_integer(value: Any, what: str) -> v.Rejected:
    """Why ``value`` (JSON, not an int) was refused where an integer belongs: NaN/Inf or a wrong type."""
    reason = "not_finite" if isinstance(value, float) and not math.isfinite(value) else "wrong_type"
    return v.Rejected(reason, f"{what}: expected an integer, got {value!r:.20}")


def parse_head(raw: Any, now_unix_s: float) -> Head:
    """``v``, ``kind``, ``pid``, ``seq``, ``wall`` (within the skew limit of now) and ``model``."""
    if not isinstance(raw, dict) or raw.get("v") != VERSION or raw.get("kind") != KIND:
        raise v.Rejected("malformed", "not a jouletrace v2 scheduler message")
    model = raw.get("model", "")
    if not (isinstance(model, str) and len(model) <= _MAX_MODEL_CHARS and model.isprintable()):
        model = ""
    wall_s, ahead_s = v.sent_unix_s(raw.get("wall"), "wall", now_unix_s)
    return Head(
        pid=index(raw.get("pid"), "pid"),
        seq=index(raw.get("seq"), "seq"),
        wall_s=wall_s,
        ahead_s=ahead_s,
        model=model,
    )


def parse_new(row: Any) -> NewRow:
    """``[idx, request_id, prompt_tokens, arrival_ago_s]``."""
    idx, request_id, prompt, ago = v.fixed_row(row, 4, "new")
    return NewRow(
        index(idx, "new idx"),
        vllm_id(request_id, "new request_id"),
        v.tokens(prompt, "new prompt_tokens"),
        v.duration_s(ago, "new arrival_ago_s"),
    )


def parse_step(row: Any) -> StepArrays:
    """``[t0_ago_s, t1_ago_s, [idx...], [scheduled...], [computed_before...]]``."""
    t0, t1, idx, scheduled, before = v.fixed_row(row, 5, "step")
    t0_ago, t1_ago = v.duration_s(t0, "step t0_ago_s"), v.duration_s(t1, "step t1_ago_s")
    if t0_ago < t1_ago:
        raise v.Rejected("end_before_start", f"step: ends {t0_ago - t1_ago:.6f} s before it starts")
    n = len(idx) if isinstance(idx, list) else -1
    for col, name in ((idx, "idx"), (scheduled, "scheduled"), (before, "computed_before")):
        if not isinstance(col, list) or len(col) != n:
            raise v.Rejected("malformed", f"step {name}: not a list as long as idx")
    if n > MAX_MEMBERS:
        raise v.Rejected("out_of_range", f"step: {n} members, over {MAX_MEMBERS}")
    limit = v.LIMITS.max_tokens
    return StepArrays(
        t0_ago,
        t1_ago,
        _ints(idx, "step idx", MAX_INDEX),
        _ints(scheduled, "step scheduled", limit),
        _ints(before, "step computed_before", limit),
    )


def _ints(values: list[Any], what: str, high: int) -> np.ndarray:
    """A list of JSON integers in ``0..high`` as an int64 array (bool, float, str, None rejected)."""
    if not values:
        return np.zeros(0, dtype=np.int64)
    if set(map(type, values)) != {int}:
        raise _not_an_integer(next(x for x in values if type(x) is not int), what)
    try:
        arr = np.array(values, dtype=np.int64)
    except OverflowError:
        raise v.Rejected("out_of_range", f"{what}: an integer over {high}") from None
    low, top = int(arr.min()), int(arr.max())
    if low < 0:
        raise v.Rejected("negative", f"{what}: {low} is negative")
    if top > high:
        raise v.Rejected("out_of_range", f"{what}: {top} is over {high}")
    return arr


def parse_fin(row: Any) -> FinRow:
    """``[idx, output_tokens, reason]``."""
    idx, output, reason = v.fixed_row(row, 3, "fin")
    if not (isinstance(reason, str) and len(reason) <= _MAX_REASON_CHARS and reason.isprintable()):
        raise v.Rejected("malformed", "fin: bad finish reason")
    return FinRow(index(idx, "fin idx"), v.tokens(output, "fin output_tokens"), reason)


def parse_gone(value: Any) -> int:
    """One ``gone`` entry: an idx."""
    return index(value, "gone idx")
