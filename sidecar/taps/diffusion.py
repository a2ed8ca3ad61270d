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

Every value is checked (:mod:`.diffusion_fields`) before anything is made: ids,
amounts (finite, >= 0, under a bound), names; a bad one raises
:class:`~sidecar.taps.validate.Rejected` and the receiver drops that span only. The
same checks run as an export arrives (``check_span``), so the span is refused in the
export's ``partial_success`` too.
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
from sidecar.contracts.span_attributes import BATCH_SPAN, BATCH_START_SPAN, REQUEST_SPAN, SPAN_KIND
from sidecar.recent_ids import remember
from sidecar.taps import diffusion_fields as fields
from sidecar.taps import validate as v
from sidecar.taps.spans import ReceivedSpan, TapOutput

__all__ = ["DiffusionSpanHandler"]

_MAX_OPEN = 1024  # pipeline calls begun and not ended that are waited for (more: the oldest not)
_MAX_REMEMBERED = 50_000  # request ids kept to refuse a second request span for one request


class DiffusionSpanHandler:
    """Claims the diffusion server's batch and request spans; leaves every other span alone."""

    claim_keys = (SPAN_KIND,)  # it claims only spans with this attribute (the OTLP receiver's fast path)

    def __init__(
        self,
        to_mono: Callable[[float], float],
        wall: Callable[[], float] = time.time,
        *,
        max_batch_s: float = 900.0,
        is_final: Callable[[str], bool] = lambda request_id: False,
    ) -> None:
        self._to_mono = to_mono
        self.is_final = is_final  # attribution has the id's final record (its recent finals)
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
        kind = fields.kind_of(span, self._wall())  # each below reads its fields whole before any state
        if kind == BATCH_START_SPAN:
            self._started(span)
        elif kind == BATCH_SPAN:
            self._batch(span, out)
        elif kind == REQUEST_SPAN:
            self._request(span, out)
        return kind is not None

    def check_span(self, span: ReceivedSpan) -> None:
        """The checks that need no state (:func:`.diffusion_fields.check`), made as the export
        arrives (gRPC threads), so a refusal is in the export's ``partial_success`` too."""
        fields.check(span, self._wall())

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
        """A pipeline call begun: waited for from its start (the earliest, if said twice). One begun
        more than ``max_batch_s`` ago, or after its batch span, is not waited for."""
        now_unix_s = self._wall()
        batch_id = fields.start_batch_id(span, now_unix_s)
        if batch_id in self._ended or not self.max_batch_s > 0:
            return
        if span.start_unix_s < now_unix_s - self.max_batch_s:  # begun too long ago to wait for
            self.open_expired += 1
            return
        start_s = min(self._to_mono(span.start_unix_s), self._open.get(batch_id, math.inf))
        if remember(self._open, batch_id, start_s, _MAX_OPEN):
            self.open_expired += 1

    def _batch(self, span: ReceivedSpan, out: TapOutput) -> None:
        b = fields.batch_fields(span)
        t0_s = self._to_mono(span.start_unix_s)
        t1_s = self._to_mono(span.end_unix_s)
        self.malformed += b.equal
        self._open.pop(b.batch_id, None)
        remember(self._ended, b.batch_id, None, _MAX_OPEN)  # a start span after its batch span holds nothing
        for request_id, member_units, k in zip(b.members, b.units, b.items, strict=True):
            owned = self._own(request_id, b.batch_id)
            event = WorkEvent(owned, t0_s, t1_s, Phase.DENOISE, member_units / k, steps=b.steps)
            out.events += [event] * k  # an event an item: its share of the call's time and steps too
        self.batches += 1

    def _id_in(self, request_id: str, batch_id: str) -> str:
        """The id a request of ``batch_id`` goes by: its own, unless a request of another batch had it
        (a diffusion server restarted forgets the ids it took; the sidecar refused the second one's
        work as after final and served it the first's record, probe 10): then ``<id>~<batch id>``.
        The first batch that names an id owns it (:meth:`_own`); an id no batch here is known to own
        that attribution has a final record of is renamed too (the owners are remembered for
        50,000 ids, the final ids for 100,000: an id reused between the two lost its request)."""
        owner = self._batch_of.get(request_id)
        if owner is None:
            owner = "" if self.is_final(request_id) else batch_id
        return request_id if owner == batch_id else v.suffixed_id(request_id, f"~{batch_id}")

    def _own(self, request_id: str, batch_id: str) -> str:
        """:meth:`_id_in`, the id's owner remembered (a new name counted ``renamed_duplicate_id``)."""
        name = self._id_in(request_id, batch_id)
        if name not in self._batch_of:
            self.renamed += name != request_id
            remember(self._batch_of, name, batch_id, _MAX_REMEMBERED)
        return name

    def _request(self, span: ReceivedSpan, out: TapOutput) -> None:
        r = fields.request_fields(span)
        request_id = r.request_id if r.batch_id is None else self._id_in(r.request_id, r.batch_id)
        if request_id in self._handled:
            raise v.Rejected("duplicate", f"diffusion request span for {request_id!r} already handled")
        info = RequestInfo(
            request_id,
            model=r.model,
            operation=r.operation,
            task=r.task,
            start_s=self._to_mono(span.start_unix_s),
            end_s=self._to_mono(span.end_unix_s),
            output_units=r.output_units,
            unit=r.unit,
            attributes=r.attributes,
        )
        if r.batch_id is not None:  # checked whole: its id's owner remembered only now
            self._own(r.request_id, r.batch_id)
        out.infos.append(info)
        remember(self._handled, request_id, None, _MAX_REMEMBERED)
        self.requests += 1
