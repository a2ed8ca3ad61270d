"""One set of checks for everything a tap receives: type, finite, in range, sane times, ids.

Every tap (plugin datagram rows, OTLP spans, HTTP parameters) passes each value
it uses through these functions before it changes any state. A value that fails
raises :class:`Rejected` with a short ``reason`` from :data:`REASONS`; the tap
drops that one item (a row, a span), counts ``rejected_<reason>`` in its
counters (exported as ``jouletrace_tap_events_total{outcome="rejected_<reason>"}``)
and goes on with the next item. The set of reasons is fixed, so the label stays
bounded whatever the input.

Limits (:class:`Limits`) are generous bounds on what a real server sends, not
tuning knobs: they stop numbers that cannot be real (1e30 tokens, a request of
75 years, a span dated a century away) from reaching attribution or the ledger.
Units: seconds, tokens.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "LIMITS",
    "REASONS",
    "Limits",
    "Reasons",
    "Rejected",
    "checked_rows",
    "count",
    "duration_s",
    "durations_s",
    "ended",
    "fixed_row",
    "interval_s",
    "note",
    "note_ahead",
    "number",
    "request_id",
    "section",
    "sent_unix_s",
    "span_times",
    "token_counts",
    "tokens",
    "unix_s",
]

REASONS = (
    "wrong_type",  # not a number / not a string where one is needed
    "not_finite",  # NaN, Inf, or an integer too large for a float
    "negative",  # a count or duration below 0
    "out_of_range",  # beyond the limit (tokens, durations, fractions)
    "bad_id",  # an empty, over-long or non-printable id
    "end_before_start",  # an interval that ends before it starts
    "bad_time",  # a timestamp too far from the sidecar's own clock
    "duplicate",  # an id (request, span, datagram) already handled
    "malformed",  # a structure that is not what the format says (missing fields, wrong shape)
    "other_sender",  # a row about a request another engine process holds (UDP taps)
    "too_many_senders",  # a new process id while the most kept all send (UDP taps: .senders)
)


class Rejected(ValueError):
    """An input item failed a check; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason if reason in REASONS else "malformed"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on values a real inference server can send."""

    max_tokens: int = 10_000_000  # per request or per iteration (the longest context windows)
    max_duration_s: float = 86_400.0  # a request, phase or span longer than a day is not real
    max_skew_s: float = 86_400.0  # a timestamp this far from the sidecar's wall clock is not real
    max_id_chars: int = 256
    clock_jitter_s: float = 1.0  # a duration this little below 0 is rounding between clocks: read as 0
    # a span is sent once it has ended: one that says it ends this far after the sidecar's clock is
    # refused (vllm_spans.END_AHEAD_S says why this much)
    max_end_ahead_s: float = 300.0
    # a datagram dated this far after the sidecar's clock is counted (``wall_ahead``; see sent_unix_s)
    max_ahead_s: float = 1.0


LIMITS = Limits()


def number(value: Any, what: str) -> float:
    """A finite real number (int or float; never bool, str or None)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected("wrong_type", f"{what}: expected a number, got {type(value).__name__}")
    try:
        x = float(value)
    except OverflowError:
        raise Rejected("not_finite", f"{what}: integer too large for a float") from None
    if not math.isfinite(x):
        raise Rejected("not_finite", f"{what}: {x} is not finite")
    return x


def tokens(value: Any, what: str, limits: Limits = LIMITS) -> int:
    """A token count: a whole number in ``0..max_tokens`` (an integral float is accepted)."""
    x = number(value, what)
    if x < 0:
        raise Rejected("negative", f"{what}: {x:g} tokens is negative")
    if x > limits.max_tokens:
        raise Rejected("out_of_range", f"{what}: {x:g} tokens is over {limits.max_tokens}")
    if not x.is_integer():
        raise Rejected("wrong_type", f"{what}: {x:g} is not a whole number of tokens")
    return int(x)


def count(value: Any, what: str, maximum: float) -> float:
    """A non-negative finite amount up to ``maximum`` (work units, requests, fractions)."""
    x = number(value, what)
    if x < 0:
        raise Rejected("negative", f"{what}: {x:g} is negative")
    if x > maximum:
        raise Rejected("out_of_range", f"{what}: {x:g} is over {maximum:g}")
    return x


def duration_s(value: Any, what: str, limits: Limits = LIMITS) -> float:
    """A duration in seconds in ``0..max_duration_s`` (down to ``-clock_jitter_s`` reads as 0)."""
    x = number(value, what)
    if -limits.clock_jitter_s <= x < 0:
        return 0.0
    if x < 0:
        raise Rejected("negative", f"{what}: {x:g} s is negative")
    if x > limits.max_duration_s:
        raise Rejected("out_of_range", f"{what}: {x:g} s is over {limits.max_duration_s:g} s")
    return x


def unix_s(value: Any, what: str, now_unix_s: float, limits: Limits = LIMITS) -> float:
    """A Unix time within ``max_skew_s`` of the sidecar's wall clock ``now_unix_s``."""
    x = number(value, what)
    if abs(x - now_unix_s) > limits.max_skew_s:
        raise Rejected("bad_time", f"{what}: {x:.3f} is more than {limits.max_skew_s:g} s from now")
    return x


def sent_unix_s(value: Any, what: str, now_unix_s: float, limits: Limits = LIMITS) -> tuple[float, float]:
    """A datagram's send time (:func:`unix_s`) and how far it claimed to be after ``now_unix_s`` (0
    if not). Its sender (vLLM's plugin or hook, the proxy) shares the host's clock and sent it
    before it was read, so a time after now is a clock stepped back between the two, or a forgery:
    it is taken as sent now (dated ahead, its work would be held that long and then given a later
    window's energy, holding its requests' records)."""
    x = unix_s(value, what, now_unix_s, limits)
    return (x, 0.0) if x <= now_unix_s else (now_unix_s, x - now_unix_s)


def note_ahead(counts: Counter[str], ahead_s: float, limits: Limits = LIMITS) -> None:
    """Count a datagram that said it was sent over ``max_ahead_s`` after it was read (``wall_ahead``)."""
    if ahead_s > limits.max_ahead_s:
        counts["wall_ahead"] += 1


def ended(end_unix_s: float, what: str, now_unix_s: float, limits: Limits = LIMITS) -> None:
    """A span's end: at most ``max_end_ahead_s`` after the sidecar's clock (a span is sent once its
    work is done; one dated ahead would hold its requests' records and take a later window's energy)."""
    if end_unix_s > now_unix_s + limits.max_end_ahead_s:
        raise Rejected("bad_time", f"{what}: ends {end_unix_s - now_unix_s:.0f} s after now")


def interval_s(start_s: float, end_s: float, what: str, limits: Limits = LIMITS) -> float:
    """Check ``start_s <= end_s`` and a sane length; returns the length in seconds."""
    if end_s < start_s:
        raise Rejected("end_before_start", f"{what}: ends {start_s - end_s:.6f} s before it starts")
    length = end_s - start_s
    if length > limits.max_duration_s:
        raise Rejected("out_of_range", f"{what}: lasts {length:g} s, over {limits.max_duration_s:g} s")
    return length


def request_id(value: Any, what: str = "request id", limits: Limits = LIMITS) -> str:
    """A request id: a non-empty printable string of at most ``max_id_chars`` characters."""
    if not isinstance(value, str):
        raise Rejected("bad_id", f"{what}: expected a string, got {type(value).__name__}")
    if not value or len(value) > limits.max_id_chars or not value.isprintable():
        raise Rejected("bad_id", f"{what}: empty, longer than {limits.max_id_chars} or not printable")
    return value


def suffixed_id(request_id: str, suffix: str, limits: Limits = LIMITS) -> str:
    """``request_id`` renamed with ``suffix`` (``~<pid>-<idx>``, ``~<batch id>``), its head cut to fit
    ``max_id_chars``: a renamed id over it failed :func:`request_id`, so the API could not look its
    record up. A suffix over half the room goes as a 16-hex-digit hash of itself."""
    if len(suffix) > limits.max_id_chars // 2:
        digest = hashlib.blake2b(suffix.encode("utf-8", "surrogatepass"), digest_size=8)
        suffix = suffix[0] + digest.hexdigest()
    return request_id[: limits.max_id_chars - len(suffix)] + suffix


def note(counts: Counter[str], err: Rejected) -> None:
    """Count one rejection under ``rejected_<reason>``."""
    counts[f"rejected_{err.reason}"] += 1


# ---- the same checks over columns (spans decoded as rows: :mod:`sidecar.taps.span_rows`) ----------
ABSENT, A_NUMBER, NOT_A_NUMBER = 0, 1, 2  # what a numeric column's value was


class Reasons:
    """Per row, the first check it failed: 0 none, else ``1 + REASONS.index(reason)``."""

    def __init__(self, n: int) -> None:
        self.code = np.zeros(n, dtype=np.int8)

    def fail(self, mask: np.ndarray, reason: str) -> None:
        """Rows in ``mask`` fail ``reason`` unless an earlier check already failed them."""
        self.code[mask & (self.code == 0)] = 1 + REASONS.index(reason)

    def passed(self) -> np.ndarray:
        return np.flatnonzero(self.code == 0)

    def reason(self, i: int) -> str | None:
        c = int(self.code[i])
        return REASONS[c - 1] if c else None

    def counts(self) -> dict[str, int]:
        """Rows that failed, by reason."""
        found = np.bincount(self.code, minlength=len(REASONS) + 1)
        return {REASONS[c - 1]: int(found[c]) for c in np.flatnonzero(found[1:]) + 1}


def span_times(start_s: np.ndarray, end_s: np.ndarray, now_unix_s: float, limits: Limits = LIMITS) -> Reasons:
    """:func:`unix_s` of each start, then :func:`interval_s` of each (start, end)."""
    out = Reasons(start_s.size)
    with np.errstate(invalid="ignore"):
        out.fail(~np.isfinite(start_s), "not_finite")
        out.fail(~(np.abs(start_s - now_unix_s) <= limits.max_skew_s), "bad_time")
        out.fail(end_s < start_s, "end_before_start")
        out.fail(end_s - start_s > limits.max_duration_s, "out_of_range")
    return out


def token_counts(values: np.ndarray, kinds: np.ndarray, out: Reasons, limits: Limits = LIMITS) -> np.ndarray:
    """:func:`tokens` of a column (absent: 0); failures go to ``out``; returns the counts (0 where failed)."""
    with np.errstate(invalid="ignore"):
        out.fail(kinds == NOT_A_NUMBER, "wrong_type")
        out.fail(~np.isfinite(values), "not_finite")
        out.fail(values < 0, "negative")
        out.fail(values > limits.max_tokens, "out_of_range")
        out.fail(np.isfinite(values) & (values != np.floor(values)), "wrong_type")
        ok = (kinds == A_NUMBER) & np.isfinite(values) & (values >= 0) & (values <= limits.max_tokens)
    return np.where(ok & (values == np.floor(values)), values, 0.0)


def durations_s(values: np.ndarray, kinds: np.ndarray, out: Reasons, limits: Limits = LIMITS) -> np.ndarray:
    """:func:`duration_s` of a column (absent: 0; just below 0: 0); failures go to ``out``."""
    with np.errstate(invalid="ignore"):
        out.fail(kinds == NOT_A_NUMBER, "wrong_type")
        out.fail(~np.isfinite(values), "not_finite")
        jitter = (values < 0) & (values >= -limits.clock_jitter_s)
        out.fail((values < 0) & ~jitter, "negative")
        out.fail(values > limits.max_duration_s, "out_of_range")
        ok = (kinds == A_NUMBER) & np.isfinite(values) & (values >= 0) & (values <= limits.max_duration_s)
    return np.where(ok, values, 0.0)


_T = TypeVar("_T")


def section(raw: dict[str, Any], key: str) -> list[Any]:
    """A datagram's section of rows (e.g. ``new``, ``steps``, ``begin``): a list (absent: empty)."""
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise Rejected("malformed", f"{key}: not a list")
    return value


def fixed_row(row: Any, n: int, what: str) -> list[Any]:
    """A row of exactly ``n`` values."""
    if not isinstance(row, list) or len(row) != n:
        raise Rejected("malformed", f"{what} row: not a list of {n}")
    return row


def checked_rows(
    counts: Counter[str], raw: dict[str, Any], key: str, parse: Callable[[Any], _T]
) -> Iterator[_T]:
    """The section's rows that pass their checks; each one that fails is counted and skipped."""
    try:
        rows = section(raw, key)
    except Rejected as err:
        note(counts, err)
        return
    for row in rows:
        try:
            item = parse(row)
        except Rejected as err:  # this row only: the rows next to it still count
            note(counts, err)
            continue
        yield item
