"""Diffusion spans: the server's OTLP exporter -> the sidecar's receiver -> denoise work and request infos."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from servers.diffusion.batcher import Batch, Job
from servers.diffusion.shapes import JobSpec, Shape
from servers.diffusion.tracing import Tracing
from sidecar.attribution.events import Phase
from sidecar.contracts import span_attributes as attrs
from sidecar.taps.diffusion import DiffusionSpanHandler
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import ReceivedSpan, TapOutput

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

    assert [e.request_id for e in events] == ["img-a", "img-b"]
    unit = 64 * 32 * 1 * 4  # pixels x frames x steps
    assert [e.units for e in events] == [unit, 3 * unit]
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
