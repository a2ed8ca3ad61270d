"""Diffusion spans a hostile sender shapes: refused by reason, at no cost to the good ones beside them."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace

from sidecar.attribution.events import WorkEvent
from sidecar.contracts import span_attributes as attrs
from sidecar.taps.diffusion import DiffusionSpanHandler
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.otlp_decode import respond
from sidecar.taps.otlp_drain import drain
from sidecar.taps.spans import ReceivedSpan, TapOutput


def _batch(batch_id: str, members: list[str], **more: object) -> ReceivedSpan:
    a = {attrs.SPAN_KIND: attrs.BATCH_SPAN, attrs.BATCH_ID: batch_id, attrs.BATCH_MEMBERS: members, **more}
    return ReceivedSpan("t" * 32, batch_id, "", attrs.BATCH_SPAN, 0.0, 1.0, a)  # type: ignore[arg-type]


def _events(out: TapOutput) -> list[WorkEvent]:
    events = [e for e in out.events if isinstance(e, WorkEvent)]
    assert len(events) == len(out.events)
    return events


def test_a_batch_span_naming_more_members_than_a_call_holds_is_refused_whole_the_good_one_kept() -> None:
    """Adversarial probe: one batch span naming 52,000 ids made 52,000 requests, past attribution's
    ``max_requests`` (50,000): every good request in flight was evicted (0 J, energy unknown)."""
    handler = DiffusionSpanHandler(lambda s: s, wall=lambda: 10.0)
    flood = _batch("flood", [f"p-{i}" for i in range(52_000)])
    good = _batch("good", ["a", "b"], **{attrs.BATCH_MEMBER_UNITS: [10, 30]})
    out, outcomes = drain([flood, good], [handler])
    assert outcomes == Counter({"rejected_out_of_range": 1})
    assert [e.request_id for e in _events(out)] == ["a", "b"]
    assert handler.batches == 1 and handler.stats().events[("diffusion_spans", "batches")] == 1


def test_a_batch_as_big_as_a_call_may_be_is_taken() -> None:
    handler, out = DiffusionSpanHandler(lambda s: s, wall=lambda: 10.0), TapOutput()
    assert handler.handle(_batch("big", [f"m-{i}" for i in range(1024)]), out)
    assert len(out.events) == 1024


def test_member_units_too_small_to_divide_are_one_event_a_member_not_an_internal_error() -> None:
    """Adversarial probe: units of 5e-324 in a batch of 2 items: an item's share is 0.0 in floats,
    and dividing by it raised ZeroDivisionError (counted ``internal_errors``, with a traceback)."""
    handler = DiffusionSpanHandler(lambda s: s, wall=lambda: 10.0)
    tiny = {attrs.BATCH_MEMBER_UNITS: [5e-324], attrs.BATCH_SIZE: 2}
    out, outcomes = drain([_batch("z", ["z-a"], **tiny)], [handler])
    assert outcomes == Counter()
    assert [(e.request_id, e.units) for e in _events(out)] == [("z-a", 5e-324)]


def test_a_batch_span_over_the_member_cap_is_refused_as_the_export_arrives_and_reported() -> None:
    """Refused when the export arrives (not only when the tick handles it), so the exporter reads it
    in ``partial_success``; the good batch beside it is queued and handled."""
    receiver = OtlpReceiver([DiffusionSpanHandler(lambda s: s, wall=time.time)], host="127.0.0.1", port=0)
    now = time.time()
    flood = replace(_batch("flood", [f"p-{i}" for i in range(2_000)]), start_unix_s=now - 1, end_unix_s=now)
    good = replace(_batch("good", ["a", "b"]), start_unix_s=now - 1, end_unix_s=now)
    refused = receiver.accept([flood, good])
    assert refused == Counter({"out_of_range": 1})
    assert respond(refused).partial_success.rejected_spans == 1
    events, _ = receiver.due(0.0)
    assert sorted(e.request_id for e in events if isinstance(e, WorkEvent)) == ["a", "b"]
    assert receiver.counts["rejected_out_of_range"] == 1


def test_every_check_that_needs_no_state_refuses_a_span_as_its_export_arrives() -> None:
    """Only the member cap was checked on arrival: a request span with a NaN count, a batch span
    without members or a start span dated ahead were answered as accepted, then refused by the tick
    (counted, but the exporter was told nothing)."""
    receiver = OtlpReceiver([DiffusionSpanHandler(lambda s: s, wall=time.time)], host="127.0.0.1", port=0)
    now = time.time()

    def span(kind: str, sid: str, **a: object) -> ReceivedSpan:
        attributes = {attrs.SPAN_KIND: kind, **a}
        return ReceivedSpan("t" * 32, sid, "", kind, now - 1, now, attributes)  # type: ignore[arg-type]

    bad = [
        span(attrs.REQUEST_SPAN, "s1", **{attrs.REQUEST_ID: "nan", attrs.OUTPUT_UNITS: float("nan")}),
        span(
            attrs.REQUEST_SPAN,
            "s2",
            **{attrs.REQUEST_ID: "neg", attrs.OUTPUT_FRAMES: -3, attrs.UNIT: "video"},
        ),
        span(attrs.BATCH_SPAN, "s3", **{attrs.BATCH_ID: "empty", attrs.BATCH_MEMBERS: []}),
        replace(span(attrs.BATCH_START_SPAN, "s4", **{attrs.BATCH_ID: "ahead"}), start_unix_s=now + 3600),
        span(attrs.REQUEST_SPAN, "s5", **{attrs.REQUEST_ID: 7}),
    ]
    good = span(attrs.REQUEST_SPAN, "s6", **{attrs.REQUEST_ID: "good", attrs.OUTPUT_UNITS: 1})
    refused = receiver.accept([*bad, good])
    assert sum(refused.values()) == len(bad), refused
    assert respond(refused).partial_success.rejected_spans == len(bad)
    _, infos = receiver.due(0.0)
    assert [i.request_id for i in infos] == ["good"]
