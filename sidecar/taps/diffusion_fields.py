"""The diffusion spans' fields, checked without state: what a batch or request span says.

Shared by the handler (:mod:`.diffusion`), which then applies them to its state, and by its
``check_span``, which runs the same checks as an export arrives (gRPC threads), so that a span
they refuse is refused in the export's ``partial_success`` too, not only counted later. Every
value is checked (:mod:`.validate`): ids, amounts (finite, >= 0, under a bound), names; a bad
one raises :class:`~sidecar.taps.validate.Rejected`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecar.contracts.span_attributes import (
    BATCH_ID,
    BATCH_MEMBER_UNITS,
    BATCH_MEMBERS,
    BATCH_SIZE,
    BATCH_SPAN,
    BATCH_START_SPAN,
    DENOISE_STEPS,
    MODEL,
    OPERATION,
    OUTPUT_FPS,
    OUTPUT_FRAMES,
    OUTPUT_UNITS,
    REQUEST_ID,
    REQUEST_SPAN,
    REQUEST_STATUS,
    SPAN_KIND,
    TASK,
    UNIT,
    WORK_UNITS,
)
from sidecar.taps import validate as v
from sidecar.taps.spans import AttrValue, ReceivedSpan

__all__ = [
    "MAX_MEMBERS",
    "Batch",
    "Request",
    "batch_fields",
    "check",
    "kind_of",
    "request_fields",
    "start_batch_id",
]

_MAX_UNITS = 1e18  # pixels x frames x steps x items of one request or batch
_MAX_COUNT = 1e7  # steps, frames, fps, images of one request
_MAX_ITEMS = 1024  # items of one batch taken one event each (a batch span saying more: one a member)
# requests of one pipeline call, each one item at least: the server's call is 8 items by default
# (servers/diffusion max_batch_size), and a span this big makes 2% of attribution's 50,000
# max_requests (a span of 52,000 made that many phantom requests and evicted every real one)
MAX_MEMBERS = 1024


@dataclass(frozen=True)
class Batch:
    """A batch span's fields: its members, each one's units and items, the call's steps."""

    batch_id: str
    members: list[str]
    units: list[float]
    items: list[int]
    steps: float
    equal: bool  # the per-member units did not match the members: equal shares (``malformed``)


@dataclass(frozen=True)
class Request:
    """A request span's fields (the names as metric labels, the amounts checked)."""

    request_id: str
    batch_id: str | None
    unit: str
    model: str
    operation: str
    task: str
    output_units: float
    attributes: dict[str, str] = field(default_factory=dict)


def kind_of(span: ReceivedSpan, now_unix_s: float) -> str | None:
    """A diffusion span's kind (None: not one), once its end is not after now (:func:`.validate.ended`)."""
    kind = span.attributes.get(SPAN_KIND)
    if kind not in (BATCH_SPAN, REQUEST_SPAN, BATCH_START_SPAN):
        return None
    v.ended(span.end_unix_s, f"diffusion {kind} span", now_unix_s)
    return str(kind)


def check(span: ReceivedSpan, now_unix_s: float) -> str | None:
    """Every check of a diffusion span that needs no state; returns its kind (None: not one)."""
    kind = kind_of(span, now_unix_s)
    if kind == BATCH_SPAN:
        batch_fields(span)
    elif kind == REQUEST_SPAN:
        request_fields(span)
    elif kind == BATCH_START_SPAN:
        start_batch_id(span, now_unix_s)
    return kind


def _amount(value: AttrValue | None, what: str, maximum: float = _MAX_COUNT, default: float = 0.0) -> float:
    """A finite amount in ``0..maximum``; a numeric string is read as its number; absent -> default."""
    if value is None:
        return default
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise v.Rejected("wrong_type", f"{what}: {value[:32]!r} is not a number") from None
        return v.count(number, what, maximum)
    return v.count(value, what, maximum)


def _name(value: AttrValue | None, what: str, default: str) -> str:
    """A short printable name (model, operation, task, unit: they become metric labels)."""
    if value is None:
        return default
    return v.request_id(value, what)


def _items(units: list[float], batch_size: float) -> list[int]:
    """Each member's items (images, or videos) in a same-shape batch of ``batch_size`` items, where
    its units are a whole number of the batch's units per item; else one a member.

    A member's work event stands for each of its items: the fitted rule shares the call's static
    power by time and its per-step energy by steps *per event*, so a member with three images as one
    event paid a quarter of those terms beside a one-image member instead of three quarters
    (probe 10: 1.41 J an image against 3.52 in one call)."""
    ones = [1] * len(units)
    per_item = sum(units) / batch_size if 1 <= batch_size <= _MAX_ITEMS else 0.0
    if not per_item > 0:  # (units of 5e-324: an item's share is 0.0 in floats, nothing to divide by)
        return ones
    items = [round(u / per_item) for u in units]
    exact = all(k >= 1 and abs(k * per_item - u) <= 1e-9 * u for k, u in zip(items, units, strict=True))
    return items if exact and sum(items) == batch_size else ones


def batch_fields(span: ReceivedSpan) -> Batch:
    """A batch span's fields; one naming no member, or over :data:`MAX_MEMBERS`, is refused whole
    (before a member is read)."""
    members_raw = span.attributes.get(BATCH_MEMBERS)
    if not isinstance(members_raw, list) or not members_raw:
        raise v.Rejected("malformed", f"diffusion batch span {span.span_id} has no members")
    if len(members_raw) > MAX_MEMBERS:
        what = f"diffusion batch span {span.span_id}: {len(members_raw)} members"
        raise v.Rejected("out_of_range", f"{what}, over {MAX_MEMBERS}")
    batch_id = v.request_id(span.attributes.get(BATCH_ID, span.span_id), BATCH_ID)
    members = [v.request_id(m, BATCH_MEMBERS) for m in members_raw]
    units_raw = span.attributes.get(BATCH_MEMBER_UNITS)
    units = (
        [_amount(u, BATCH_MEMBER_UNITS, _MAX_UNITS) for u in units_raw] if isinstance(units_raw, list) else []
    )
    steps = _amount(span.attributes.get(DENOISE_STEPS), DENOISE_STEPS, default=1.0)
    equal = len(units) != len(members)  # fall back to equal shares of the batch's work
    if equal:
        total = _amount(span.attributes.get(WORK_UNITS), WORK_UNITS, _MAX_UNITS, float(len(members)))
        units = [total / len(members)] * len(members)
    items = _items(units, _amount(span.attributes.get(BATCH_SIZE), BATCH_SIZE))
    return Batch(batch_id, members, units, items, steps, equal)


def request_fields(span: ReceivedSpan) -> Request:
    """A request span's fields. One that did not end ``ok`` delivered nothing: 0 output units (those
    made are ``output_units_undelivered``)."""
    a = span.attributes
    request_id = v.request_id(a.get(REQUEST_ID), REQUEST_ID)
    batch_id = v.request_id(a[BATCH_ID], BATCH_ID) if BATCH_ID in a else None
    unit = _name(a.get(UNIT), UNIT, "image")
    status = _name(a.get(REQUEST_STATUS), REQUEST_STATUS, "ok")
    attributes = {"trace_id": span.trace_id, REQUEST_STATUS: status}
    output_units = _amount(a.get(OUTPUT_UNITS), OUTPUT_UNITS)
    if status != "ok" and output_units > 0:  # made, not delivered: no images served, the energy spent
        attributes["output_units_undelivered"] = f"{output_units:g}"
        output_units = 0.0
    if batch_id is not None:
        attributes["batch_id"] = batch_id
    if unit == "video":
        attributes["video_frames"] = f"{_amount(a.get(OUTPUT_FRAMES), OUTPUT_FRAMES):g}"
        attributes["video_fps"] = f"{_amount(a.get(OUTPUT_FPS), OUTPUT_FPS):g}"
    model = _name(a.get(MODEL), MODEL, "unknown")
    operation = _name(a.get(OPERATION), OPERATION, f"{unit}_generation")
    task = _name(a.get(TASK), TASK, f"text-to-{unit}")
    return Request(request_id, batch_id, unit, model, operation, task, output_units, attributes)


def start_batch_id(span: ReceivedSpan, now_unix_s: float) -> str:
    """A batch-start span's batch id; one dated after now is refused (``bad_time``: a call is
    announced as it begins; a start ahead would hold a later tick)."""
    batch_id = v.request_id(span.attributes.get(BATCH_ID), BATCH_ID)
    ahead_s = span.start_unix_s - now_unix_s
    if ahead_s > v.LIMITS.clock_jitter_s:
        raise v.Rejected("bad_time", f"diffusion batch start: {ahead_s:.0f} s after now")
    return batch_id
