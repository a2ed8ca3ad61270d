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
  (images, or 1 video) and, for videos, frames and fps.

:class:`DiffusionSpanHandler` turns a batch span into one
:class:`~sidecar.attribution.events.WorkEvent` (phase ``DENOISE``) per member
over the batch interval, with the member's units, so a tick's energy is split
by work units (equal shares for a homogeneous batch), and a request span into
a finished :class:`~sidecar.attribution.events.RequestInfo`. Attribute names:
:mod:`sidecar.contracts.span_attributes` (the server imports them from there too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sidecar.attribution.events import Phase, RequestInfo, WorkEvent
from sidecar.attribution.records import TapReport
from sidecar.contracts.span_attributes import (
    BATCH_ID,
    BATCH_MEMBER_UNITS,
    BATCH_MEMBERS,
    BATCH_SPAN,
    DENOISE_STEPS,
    MODEL,
    OPERATION,
    OUTPUT_FPS,
    OUTPUT_FRAMES,
    OUTPUT_UNITS,
    REQUEST_ID,
    REQUEST_SPAN,
    SPAN_KIND,
    TASK,
    UNIT,
    WORK_UNITS,
)
from sidecar.taps.spans import AttrValue, ReceivedSpan, TapOutput

__all__ = ["DiffusionSpanHandler"]

log = logging.getLogger(__name__)


def _num(value: AttrValue | None, default: float = 0.0) -> float:
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return default


class DiffusionSpanHandler:
    """Claims the diffusion server's batch and request spans; leaves every other span alone."""

    def __init__(self, to_mono: Callable[[float], float]) -> None:
        self._to_mono = to_mono
        self.batches = 0
        self.requests = 0
        self.malformed = 0

    def handle(self, span: ReceivedSpan, out: TapOutput) -> bool:
        kind = span.attributes.get(SPAN_KIND)
        if kind == BATCH_SPAN:
            self._batch(span, out)
            return True
        if kind == REQUEST_SPAN:
            self._request(span, out)
            return True
        return False

    def stats(self) -> TapReport:
        """Batch and request spans turned into work, and malformed ones (``diffusion_spans``)."""
        counts = {"batches": self.batches, "requests": self.requests, "malformed": self.malformed}
        return TapReport(events={("diffusion_spans", k): v for k, v in counts.items()})

    def _batch(self, span: ReceivedSpan, out: TapOutput) -> None:
        members_raw = span.attributes.get(BATCH_MEMBERS)
        members = [str(m) for m in members_raw] if isinstance(members_raw, list) else []
        if not members:
            self.malformed += 1
            log.warning("diffusion batch span %s has no members; ignored", span.span_id)
            return
        units_raw = span.attributes.get(BATCH_MEMBER_UNITS)
        units = [_num(u) for u in units_raw] if isinstance(units_raw, list) else []
        if len(units) != len(members):  # fall back to equal shares of the batch's work
            self.malformed += 1
            total = _num(span.attributes.get(WORK_UNITS), float(len(members)))
            units = [total / len(members)] * len(members)
        t0_s = self._to_mono(span.start_unix_s)
        t1_s = self._to_mono(span.end_unix_s)
        steps = _num(span.attributes.get(DENOISE_STEPS), 1.0)
        for request_id, member_units in zip(members, units, strict=True):
            out.events.append(WorkEvent(request_id, t0_s, t1_s, Phase.DENOISE, member_units, steps=steps))
        self.batches += 1

    def _request(self, span: ReceivedSpan, out: TapOutput) -> None:
        a = span.attributes
        request_id = str(a.get(REQUEST_ID, ""))
        if not request_id:
            self.malformed += 1
            return
        unit = str(a.get(UNIT, "image"))
        attributes = {"trace_id": span.trace_id}
        if BATCH_ID in a:
            attributes["batch_id"] = str(a[BATCH_ID])
        if unit == "video":
            attributes["video_frames"] = f"{_num(a.get(OUTPUT_FRAMES)):g}"
            attributes["video_fps"] = f"{_num(a.get(OUTPUT_FPS)):g}"
        out.infos.append(
            RequestInfo(
                request_id,
                model=str(a.get(MODEL, "unknown")),
                operation=str(a.get(OPERATION, f"{unit}_generation")),
                task=str(a.get(TASK, f"text-to-{unit}")),
                start_s=self._to_mono(span.start_unix_s),
                end_s=self._to_mono(span.end_unix_s),
                output_units=_num(a.get(OUTPUT_UNITS)),
                unit=unit,
                attributes=attributes,
            )
        )
        self.requests += 1
