"""Diffusion spans -> denoise work and request infos (the diffusion server's contract).

The diffusion server (``servers/diffusion``) runs each batch as one pipeline
call and sends, over OTLP:

* one **batch span** (``jouletrace.span = "diffusion.batch"``) per pipeline
  call: start/end = the call, ``jouletrace.batch.members`` = the request ids
  in it, ``jouletrace.batch.member_units`` = each member's work units
  (pixels x frames x denoising steps x its images), ``jouletrace.denoise.steps``;
* one **request span** (``jouletrace.span = "diffusion.request"``) per request
  that ran: start = arrival, end = response, naming its batch, model,
  operation (``image_generation`` / ``video_generation``), task, output units
  (images, or 1 video), its status (``ok``, ``error``, ``disconnected``) and, for
  videos, frames and fps. A request that did not end ``ok`` delivered nothing: its
  record has 0 output units (those made are ``output_units_undelivered``), so
  images nobody received do not enter J/image; its energy is still its own.

:class:`DiffusionSpanHandler` turns a batch span into one
:class:`~sidecar.attribution.events.WorkEvent` (phase ``DENOISE``) per item
(a member's image, or video) over the batch interval, with the item's units, so
a tick's energy is split by work units, time and steps alike per item (equal
shares per image in a homogeneous batch), and a request span into
a finished :class:`~sidecar.attribution.events.RequestInfo`. Attribute names:
:mod:`sidecar.contracts.span_attributes` (the server imports them from there too).

Every value is checked (:mod:`.validate`) before anything is made: ids,
amounts (finite, >= 0, under a bound), names; a bad one raises
:class:`~sidecar.taps.validate.Rejected` and the receiver drops that span only.
A batch span whose per-member units do not match its members falls back to
equal shares (counted in ``malformed``).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from sidecar.attribution.events import Phase, RequestInfo, WorkEvent
from sidecar.attribution.records import TapReport
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
from sidecar.recent_ids import remember
from sidecar.taps import validate as v
from sidecar.taps.spans import AttrValue, ReceivedSpan, TapOutput

__all__ = ["DiffusionSpanHandler"]


_MAX_UNITS = 1e18  # pixels x frames x steps x items of one request or batch
_MAX_COUNT = 1e7  # steps, frames, fps, images of one request
_MAX_OPEN = 1024  # pipeline calls begun and not ended that are waited for (more: the oldest not)
_MAX_ITEMS = 1024  # items of one batch taken one event each (a batch span saying more: one a member)
# requests of one pipeline call, each one item at least: the server's call is 8 items by default
# (servers/diffusion max_batch_size), and a span this big makes 2% of attribution's 50,000
# max_requests (a span of 52,000 made that many phantom requests and evicted every real one)
_MAX_MEMBERS = 1024
_MAX_REMEMBERED = 50_000  # request ids kept to refuse a second request span for one request


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


def _members_within_cap(span: ReceivedSpan) -> None:
    """A batch span naming over :data:`_MAX_MEMBERS` members is refused whole, before one is read."""
    members = span.attributes.get(BATCH_MEMBERS)
    if isinstance(members, list) and len(members) > _MAX_MEMBERS:
        what = f"diffusion batch span {span.span_id}: {len(members)} members"
        raise v.Rejected("out_of_range", f"{what}, over {_MAX_MEMBERS}")


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


class DiffusionSpanHandler:
    """Claims the diffusion server's batch and request spans; leaves every other span alone."""

    claim_keys = (SPAN_KIND,)  # it claims only spans with this attribute (the OTLP receiver's fast path)

    def __init__(
        self,
        to_mono: Callable[[float], float],
        wall: Callable[[], float] = time.time,
        *,
        max_batch_s: float = 900.0,
    ) -> None:
        self._to_mono = to_mono
        self._wall = wall  # Unix s now: a span that says it ends well after it is refused
        self.max_batch_s = max_batch_s
        self._open: OrderedDict[str, float] = OrderedDict()  # batch id -> its call's start (monotonic s)
        self.open_expired = 0
        self._ended: OrderedDict[str, None] = OrderedDict()  # recent batch ids whose batch span came
        self.batches = 0
        self.requests = 0
        self.malformed = 0
        self._handled: OrderedDict[str, None] = OrderedDict()
        self._batch_of: OrderedDict[str, str] = OrderedDict()  # request id -> the batch that owns it
        self.renamed = 0

    def handle(self, span: ReceivedSpan, out: TapOutput) -> bool:
        kind = span.attributes.get(SPAN_KIND)
        if kind in (BATCH_SPAN, REQUEST_SPAN, BATCH_START_SPAN):
            v.ended(span.end_unix_s, f"diffusion {kind} span", self._wall())
        if kind == BATCH_START_SPAN:
            self._started(span)
            return True
        if kind == BATCH_SPAN:
            self._batch(span, out)
            return True
        if kind == REQUEST_SPAN:
            self._request(span, out)
            return True
        return False

    def check_span(self, span: ReceivedSpan) -> None:
        """The check that needs no state, made as the export arrives (gRPC threads), so the refusal
        is in the export's ``partial_success`` too: a batch span naming over 1,024 members."""
        if span.attributes.get(SPAN_KIND) == BATCH_SPAN:
            _members_within_cap(span)

    def stats(self) -> TapReport:
        """Batch and request spans turned into work, and malformed ones (``diffusion_spans``)."""
        counts = {
            "batches": self.batches,
            "requests": self.requests,
            "malformed": self.malformed,
            "renamed_duplicate_id": self.renamed,
            "batch_start_expired": self.open_expired,
        }
        return TapReport(events={("diffusion_spans", k): n for k, n in counts.items()})

    def hold_s(self, now_s: float) -> float | None:
        """The start of the oldest pipeline call begun and not ended (its batch span not here yet):
        the sidecar seals no time after it, so the call's work, reported at its end, is not clipped.
        A call open longer than ``max_batch_s`` (a server gone mid-call) is not waited for
        (``open_expired``). None: nothing to wait for."""
        expired = [batch_id for batch_id, t0_s in self._open.items() if now_s - t0_s > self.max_batch_s]
        for batch_id in expired:
            del self._open[batch_id]
        self.open_expired += len(expired)
        return min(self._open.values(), default=None)

    def _started(self, span: ReceivedSpan) -> None:
        """A pipeline call begun: waited for from its start (the earliest, if said twice). One dated
        after now is refused (``bad_time``: a call is announced as it begins; a start ahead would hold
        a later tick); one begun more than ``max_batch_s`` ago, or after its batch span, is not waited for."""
        batch_id = v.request_id(span.attributes.get(BATCH_ID), BATCH_ID)
        now_unix_s = self._wall()
        ahead_s = span.start_unix_s - now_unix_s
        if ahead_s > v.LIMITS.clock_jitter_s:
            raise v.Rejected("bad_time", f"diffusion batch start: {ahead_s:.0f} s after now")
        if batch_id in self._ended or not self.max_batch_s > 0:
            return
        if span.start_unix_s < now_unix_s - self.max_batch_s:  # begun too long ago to wait for
            self.open_expired += 1
            return
        start_s = min(self._to_mono(span.start_unix_s), self._open.get(batch_id, math.inf))
        if remember(self._open, batch_id, start_s, _MAX_OPEN):
            self.open_expired += 1

    def _batch(self, span: ReceivedSpan, out: TapOutput) -> None:
        members_raw = span.attributes.get(BATCH_MEMBERS)
        if not isinstance(members_raw, list) or not members_raw:
            raise v.Rejected("malformed", f"diffusion batch span {span.span_id} has no members")
        _members_within_cap(span)
        batch_id = v.request_id(span.attributes.get(BATCH_ID, span.span_id), BATCH_ID)
        members = [v.request_id(m, BATCH_MEMBERS) for m in members_raw]
        units_raw = span.attributes.get(BATCH_MEMBER_UNITS)
        units = (
            [_amount(u, BATCH_MEMBER_UNITS, _MAX_UNITS) for u in units_raw]
            if isinstance(units_raw, list)
            else []
        )
        steps = _amount(span.attributes.get(DENOISE_STEPS), DENOISE_STEPS, default=1.0)
        equal = len(units) != len(members)  # fall back to equal shares of the batch's work
        if equal:
            total = _amount(span.attributes.get(WORK_UNITS), WORK_UNITS, _MAX_UNITS, float(len(members)))
            units = [total / len(members)] * len(members)
        items = _items(units, _amount(span.attributes.get(BATCH_SIZE), BATCH_SIZE))
        t0_s = self._to_mono(span.start_unix_s)
        t1_s = self._to_mono(span.end_unix_s)
        # checked whole: from here nothing refuses it, so a refused span changes no state
        self.malformed += equal
        self._open.pop(batch_id, None)
        remember(self._ended, batch_id, None, _MAX_OPEN)  # a start span after its batch span holds nothing
        for request_id, member_units, k in zip(members, units, items, strict=True):
            owned = self._own(request_id, batch_id)
            event = WorkEvent(owned, t0_s, t1_s, Phase.DENOISE, member_units / k, steps=steps)
            out.events += [event] * k  # an event an item: its share of the call's time and steps too
        self.batches += 1

    def _id_in(self, request_id: str, batch_id: str) -> str:
        """The id a request of ``batch_id`` goes by: its own, unless a request of another batch had it
        (a diffusion server restarted forgets the ids it took; the sidecar refused the second one's
        work as after final and served it the first's record, probe 10): then ``<id>~<batch id>``.
        The first batch that names an id owns it (:meth:`_own`)."""
        owner = self._batch_of.get(request_id, batch_id)
        return request_id if owner == batch_id else f"{request_id}~{batch_id}"

    def _own(self, request_id: str, batch_id: str) -> str:
        """:meth:`_id_in`, the id's owner remembered (a new name counted ``renamed_duplicate_id``)."""
        name = self._id_in(request_id, batch_id)
        if name not in self._batch_of:
            self.renamed += name != request_id
            remember(self._batch_of, name, batch_id, _MAX_REMEMBERED)
        return name

    def _request(self, span: ReceivedSpan, out: TapOutput) -> None:
        a = span.attributes
        sent_id = request_id = v.request_id(a.get(REQUEST_ID), REQUEST_ID)
        batch_id = v.request_id(a[BATCH_ID], BATCH_ID) if BATCH_ID in a else None
        if batch_id is not None:
            request_id = self._id_in(request_id, batch_id)
        if request_id in self._handled:
            raise v.Rejected("duplicate", f"diffusion request span for {request_id!r} already handled")
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
        info = RequestInfo(
            request_id,
            model=_name(a.get(MODEL), MODEL, "unknown"),
            operation=_name(a.get(OPERATION), OPERATION, f"{unit}_generation"),
            task=_name(a.get(TASK), TASK, f"text-to-{unit}"),
            start_s=self._to_mono(span.start_unix_s),
            end_s=self._to_mono(span.end_unix_s),
            output_units=output_units,
            unit=unit,
            attributes=attributes,
        )
        if batch_id is not None:  # checked whole: its id's owner remembered only now
            self._own(sent_id, batch_id)
        out.infos.append(info)
        remember(self._handled, request_id, None, _MAX_REMEMBERED)
        self.requests += 1
