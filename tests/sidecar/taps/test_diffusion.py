"""Diffusion spans: the server's OTLP exporter -> the sidecar's receiver -> denoise work and request infos."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator

import pytest

from servers.diffusion.batcher import Batch, Job
from servers.diffusion.shapes import JobSpec, Shape
from servers.diffusion.tracing import Tracing
from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import Phase, RequestInfo
from sidecar.attribution.fit import Coefficients
from sidecar.attribution.rules import make_rule
from sidecar.contracts import span_attributes as attrs
from sidecar.taps.diffusion import DiffusionSpanHandler
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import ReceivedSpan, TapOutput
from sidecar.taps.tap import seal_until
from sidecar.taps.validate import Rejected
from tests.sidecar.attribution.helpers import timeline_with_edges

IMAGE = Shape("image", "tiny-sd", 64, 32, 1, 4, 7.5)
VIDEO = Shape("video", "tiny-wan", 64, 64, 9, 2, 5.0)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    rec = OtlpReceiver([DiffusionSpanHandler(lambda unix_s: unix_s - 1_000.0)], host="127.0.0.1", port=0)
    rec.start()
    yield rec
    rec.stop()


def _job(loop: asyncio.AbstractEventLoop, rid: str, shape: Shape, n: int, fps: int = 0) -> Job:
    spec = JobSpec(shape, "p", n, 1, "b64_json", fps=fps)
    return Job(rid, spec, loop.create_future(), time.monotonic(), time.time_ns() - 50_000_000)


def test_a_batch_span_becomes_one_denoise_event_per_member_split_by_work_units(
    receiver: OtlpReceiver,
) -> None:
    loop = asyncio.new_event_loop()
    jobs = [_job(loop, "img-a", IMAGE, 1), _job(loop, "img-b", IMAGE, 3)]
    start_ns = time.time_ns() - 2_000_000_000
    batch = Batch("b-1", IMAGE, jobs, start_unix_ns=start_ns, end_unix_ns=start_ns + 2_000_000_000)
    for j in jobs:
        j.batch = batch
    tracing = Tracing(f"127.0.0.1:{receiver.port}", schedule_delay_ms=10)
    tracing.batch_span(batch)
    for j in jobs:
        tracing.request_span(j, Tracing.parent({}), "ok", j.spec.n)
    tracing.shutdown()
    loop.close()
    events, infos = receiver.due(0.0)

    assert [e.request_id for e in events] == ["img-a", "img-b", "img-b", "img-b"]  # an event an image
    unit = 64 * 32 * 1 * 4  # pixels x frames x steps
    assert [e.units for e in events] == [unit] * 4
    assert all(e.phase is Phase.DENOISE and e.steps == 4 for e in events)
    assert events[0].t0_s == pytest.approx(start_ns / 1e9 - 1_000.0)
    assert events[0].t1_s - events[0].t0_s == pytest.approx(2.0)
    by_id = {i.request_id: i for i in infos}
    b = by_id["img-b"]
    assert (b.unit, b.output_units, b.model) == ("image", 3.0, "tiny-sd")
    assert (b.operation, b.task) == ("image_generation", "text-to-image")
    assert b.attributes["batch_id"] == "b-1" and b.end_s is not None and b.start_s is not None
    assert b.end_s > b.start_s


def test_a_video_request_carries_frames_and_fps_for_j_per_frame_and_per_second() -> None:
    handler = DiffusionSpanHandler(lambda s: s)
    out = TapOutput()
    span = ReceivedSpan(
        "t" * 32,
        "s" * 16,
        "",
        "video_generation tiny-wan",
        10.0,
        12.0,
        {
            attrs.SPAN_KIND: attrs.REQUEST_SPAN,
            attrs.REQUEST_ID: "vid-1",
            attrs.UNIT: "video",
            attrs.OUTPUT_UNITS: 1,
            attrs.OUTPUT_FRAMES: 9,
            attrs.OUTPUT_FPS: 8,
            attrs.MODEL: "tiny-wan",
        },
    )
    assert handler.handle(span, out)
    (info,) = out.infos
    assert info.attributes["video_frames"] == "9" and info.attributes["video_fps"] == "8"
    assert (info.operation, info.task, info.output_units) == ("video_generation", "text-to-video", 1.0)


def test_foreign_spans_are_left_alone_and_a_batch_without_unit_list_splits_equally() -> None:
    handler = DiffusionSpanHandler(lambda s: s)
    out = TapOutput()
    assert not handler.handle(ReceivedSpan("t", "s", "", "llm_request", 0.0, 1.0, {}), out)
    odd = ReceivedSpan(
        "t",
        "s",
        "",
        "batch",
        0.0,
        1.0,
        {attrs.SPAN_KIND: attrs.BATCH_SPAN, attrs.BATCH_MEMBERS: ["a", "b"], attrs.WORK_UNITS: 10},
    )
    assert handler.handle(odd, out)
    assert [e.units for e in out.events] == [5.0, 5.0] and handler.malformed == 1


def _span(kind: str, batch_id: str, t0_s: float, t1_s: float, **more: object) -> ReceivedSpan:
    a = {attrs.SPAN_KIND: kind, attrs.BATCH_ID: batch_id, **more}
    return ReceivedSpan("t" * 32, batch_id + kind[-5:], "", kind, t0_s, t1_s, a)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "units", "events"),
    [
        (4, [10, 30], ["a", "b", "b", "b"]),
        (3, [10, 30], ["a", "b"]),  # the size does not add up: one event a member
        (4, [10, 25], ["a", "b"]),  # units not a whole number of items
        (10**7, [10, 30], ["a", "b"]),  # a hostile size: never ten million events
        (None, [10, 30], ["a", "b"]),
    ],
)
def test_a_member_is_one_event_an_item_only_when_its_units_say_so(
    size: int | None, units: list[int], events: list[str]
) -> None:
    handler, out = DiffusionSpanHandler(lambda s: s), TapOutput()
    sized = {} if size is None else {attrs.BATCH_SIZE: size}
    batch = {attrs.BATCH_MEMBERS: ["a", "b"], attrs.BATCH_MEMBER_UNITS: units, **sized}
    assert handler.handle(_span(attrs.BATCH_SPAN, "b-1", 0.0, 1.0, **batch), out)
    assert [e.request_id for e in out.events] == events
    assert sum(e.units for e in out.events if e.request_id == "b") == units[1]


def test_the_fitted_rule_gives_every_image_of_a_homogeneous_batch_the_same_energy() -> None:
    """Probe 10: n=3 and n=1 in one call of one shape, the default fitted rule: the n=3 request got
    0.545 of the call (1.41 J an image against 3.52): its static and per-step terms were shared per
    request, only the denoise term per image."""
    handler, out = DiffusionSpanHandler(lambda s: s), TapOutput()
    members = {attrs.BATCH_MEMBERS: ["one", "three"], attrs.BATCH_MEMBER_UNITS: [10, 30], attrs.BATCH_SIZE: 4}
    handler.handle(_span(attrs.BATCH_SPAN, "b-1", 0.0, 1.0, **members, **{attrs.DENOISE_STEPS: 20}), out)
    rule = make_rule("fitted")
    # a floor of 50 W, 0.5 J a step, 0.01 J a denoise unit
    rule.fit.coef = Coefficients(50.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.01)  # type: ignore[attr-defined]
    att = Attributor(timeline_with_edges([(0.1 * k, 40.0 * k) for k in range(13)]), rule)
    infos = [RequestInfo(r, end_s=1.0, output_units=n, unit="image") for r, n in (("one", 1), ("three", 3))]
    att.ingest(out.events, infos)
    records = {r.request_id: r for r in att.advance(math.inf)}
    assert records["three"].energy_j == pytest.approx(3 * records["one"].energy_j)


@pytest.mark.parametrize(
    ("status", "units", "undelivered"), [("ok", 2.0, None), ("disconnected", 0.0, "2"), (None, 2.0, None)]
)
def test_a_request_that_did_not_end_ok_delivered_no_images(
    status: str | None, units: float, undelivered: str | None
) -> None:
    """Probe 10: a client gone while its batch ran had ``output_units`` 2 in its record, in the images
    counter and in J/image, and its status was dropped (the proxy's records keep theirs)."""
    handler, out = DiffusionSpanHandler(lambda s: s), TapOutput()
    a: dict[str, object] = {
        attrs.SPAN_KIND: attrs.REQUEST_SPAN,
        attrs.REQUEST_ID: "gone",
        attrs.OUTPUT_UNITS: 2,
    }
    if status is not None:
        a[attrs.REQUEST_STATUS] = status
    assert handler.handle(ReceivedSpan("t" * 32, "s" * 16, "", "r", 10.0, 12.0, a), out)  # type: ignore[arg-type]
    (info,) = out.infos
    assert info.output_units == units and info.attributes.get("output_units_undelivered") == undelivered
    assert info.attributes[attrs.REQUEST_STATUS] == (status or "ok")


def test_an_id_a_restarted_server_took_again_goes_on_under_its_batch() -> None:
    """Probe 10: a diffusion server restarted forgets the ids it took and took ``again`` a second
    time; the sidecar refused the second request's work (after final) and served it the first's record."""
    handler, out = DiffusionSpanHandler(lambda s: s), TapOutput()
    for batch_id, t0_s in (("b-1", 0.0), ("c-1", 5.0)):
        batch = {attrs.BATCH_MEMBERS: ["again"], attrs.BATCH_MEMBER_UNITS: [10]}
        assert handler.handle(_span(attrs.BATCH_SPAN, batch_id, t0_s, t0_s + 1, **batch), out)
        request = {attrs.REQUEST_ID: "again"}
        assert handler.handle(_span(attrs.REQUEST_SPAN, batch_id, t0_s, t0_s + 1.5, **request), out)
    assert [e.request_id for e in out.events] == ["again", "again~c-1"]
    assert [(i.request_id, i.attributes["batch_id"]) for i in out.infos] == [
        ("again", "b-1"),
        ("again~c-1", "c-1"),
    ]
    assert handler.stats().events[("diffusion_spans", "renamed_duplicate_id")] == 1


def test_an_id_attribution_has_final_is_renamed_though_its_first_owner_is_forgotten() -> None:
    """Adversarial probe: the handler remembered owners for 50,000 ids, attribution final ids for
    100,000; an id taken again between the two went on under its own name, its work was refused
    (after final) and its request got no record."""
    final = {"req-0"}
    handler, out = DiffusionSpanHandler(lambda s: s, is_final=final.__contains__), TapOutput()
    batch = {attrs.BATCH_MEMBERS: ["req-0", "req-1"], attrs.BATCH_MEMBER_UNITS: [10, 10]}
    assert handler.handle(_span(attrs.BATCH_SPAN, "b-0", 0.0, 1.0, **batch), out)
    assert handler.handle(_span(attrs.REQUEST_SPAN, "b-0", 0.0, 1.5, **{attrs.REQUEST_ID: "req-0"}), out)
    assert [e.request_id for e in out.events] == ["req-0~b-0", "req-1"]
    assert [i.request_id for i in out.infos] == ["req-0~b-0"]


def test_a_pipeline_call_begun_holds_sealing_at_its_start_until_its_batch_span_or_max_batch_s() -> None:
    """Probe 10: a batch longer than ``settle_s`` is reported at its end, after the ticks of its start
    were sealed: its work was clipped (a 7.6 s batch's record got 69 J of ~543 J)."""
    handler, out = DiffusionSpanHandler(lambda s: s, wall=lambda: 60.0, max_batch_s=100.0), TapOutput()
    assert handler.hold_s(50.0) is None
    assert handler.handle(_span(attrs.BATCH_START_SPAN, "b-1", 10.0, 10.0), out)
    assert handler.handle(_span(attrs.BATCH_START_SPAN, "b-2", 30.0, 30.0), out)
    assert out.events == [] and handler.hold_s(50.0) == 10.0  # the oldest call begun
    members = {attrs.BATCH_MEMBERS: ["a"], attrs.BATCH_MEMBER_UNITS: [5]}
    assert handler.handle(_span(attrs.BATCH_SPAN, "b-1", 10.0, 40.0, **members), out)
    assert handler.hold_s(50.0) == 30.0
    assert handler.handle(_span(attrs.BATCH_START_SPAN, "b-1", 10.0, 10.0), out)  # late start: ended
    assert handler.hold_s(50.0) == 30.0
    assert handler.hold_s(131.0) is None  # b-2 open past max_batch_s: not waited for
    assert handler.handle(_span(attrs.BATCH_START_SPAN, "b-0", -50.0, -50.0), out)  # begun too long ago
    assert handler.hold_s(60.0) is None
    assert handler.stats().events[("diffusion_spans", "batch_start_expired")] == 2
    off = DiffusionSpanHandler(lambda s: s, wall=lambda: 1e9, max_batch_s=0.0)
    assert off.handle(_span(attrs.BATCH_START_SPAN, "b-1", 10.0, 10.0), out) and off.hold_s(11.0) is None


def test_a_tick_seals_no_later_than_the_earliest_hold() -> None:
    class Holding:
        def __init__(self, at_s: float | None) -> None:
            self.at_s = at_s

        def hold_s(self, now_s: float) -> float | None:
            return self.at_s

    assert seal_until([Holding(None), object()], 100.0, 2.0) == (98.0, False)
    assert seal_until([Holding(97.0), Holding(None), Holding(99.5)], 100.0, 2.0) == (97.0, False)
    assert seal_until([Holding(97.0)], 100.0, 2.0, backlog_high=True) == (98.0, True)  # let go
    assert seal_until([Holding(99.0)], 100.0, 2.0, backlog_high=True) == (98.0, False)  # nothing held


def test_a_refused_batch_span_leaves_no_trace_its_ids_and_its_hold_are_as_before() -> None:
    handler, out = DiffusionSpanHandler(lambda s: s, wall=lambda: 60.0), TapOutput()
    assert handler.handle(_span(attrs.BATCH_START_SPAN, "b-1", 10.0, 10.0), out)
    bad = {attrs.BATCH_MEMBERS: ["x"], attrs.BATCH_MEMBER_UNITS: ["many"]}
    with pytest.raises(Rejected):
        handler.handle(_span(attrs.BATCH_SPAN, "b-1", 10.0, 20.0, **bad), out)
    assert handler.hold_s(30.0) == 10.0  # still waited for: its batch span was refused
    good = {attrs.BATCH_MEMBERS: ["x"], attrs.BATCH_MEMBER_UNITS: [5]}
    assert handler.handle(_span(attrs.BATCH_SPAN, "b-2", 10.0, 20.0, **good), out)
    assert [e.request_id for e in out.events] == ["x"]  # b-1 never owned "x": not renamed


def test_a_start_span_dated_ahead_is_refused_and_one_said_twice_keeps_the_earliest_start() -> None:
    """Probe 11: a start dated 250 s ahead (inside the 300 s a span's end may be ahead) was kept and
    held a later tick; a start said again moved the call's start later."""
    handler, out = DiffusionSpanHandler(lambda s: s, wall=lambda: 1000.0, max_batch_s=500.0), TapOutput()
    with pytest.raises(Rejected):
        handler.handle(_span(attrs.BATCH_START_SPAN, "ahead", 1250.0, 1250.0), out)
    assert handler.hold_s(1000.0) is None
    handler.handle(_span(attrs.BATCH_START_SPAN, "a", 990.0, 990.0), out)
    handler.handle(_span(attrs.BATCH_START_SPAN, "a", 999.0, 999.0), out)
    assert handler.hold_s(1000.0) == 990.0
