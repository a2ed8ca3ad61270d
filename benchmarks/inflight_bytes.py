"""Bytes a vLLM request span holds in the sidecar between its arrival and its final record, by structure.

A span flood's memory follows the requests in flight (docs/deploy.md, "Memory"): each span's request
waits ``settle_s`` and a counter update before it is sealed and final. This measures what one
such request holds, on the path users run: real OTLP exports (``otlp_flood``'s vLLM-shaped
``llm_request`` spans, as ``benchmarks/memory.py`` floods them), the receiver's lean decode
(:func:`~sidecar.taps.span_rows.decode_rows`), the real
:class:`~sidecar.taps.vllm_spans.VllmSpanHandler` (its decode one row a span, cut when
its ticks are sealed) and the attributor the sidecar builds from its default knobs
(:func:`~sidecar.attributor_knobs.build_attributor`), fed a timeline whose counter (a synthetic
one, 500 W, updating every 100 ms, read every 20 ms: no GPU here) has edges over the spans'
times. Nothing is sealed: every request stays in flight, as in the flood's first seconds.

Printed: the live Python allocations the requests added (``tracemalloc``), a request's share, and
the allocation sites holding most of it (the innermost frame in this repository's code); the work
rows a span brought and the bytes they take as pending rows (8 float64 columns); the RSS growth.
Baseline in the same run: the export bytes a span arrived in (its share of the protobuf on the
wire), so a request's footprint reads as a multiple of its own input.

Ends with one line ``inflight bytes per request N``.

    .venv/bin/python benchmarks/inflight_bytes.py [--requests 20480] [--top 8]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_phases import status_mb
from otlp_flood import EXPORT_SPANS, build_exports

from sidecar.attribution.engine import Attributor
from sidecar.attribution.floor import FloorEstimate
from sidecar.attributor_knobs import build_attributor
from sidecar.config import SidecarConfig
from sidecar.meters.base import DeviceInfo, Reading
from sidecar.taps.span_rows import decode_rows
from sidecar.taps.spans import TapOutput
from sidecar.taps.vllm_span_format import ROW_SPEC
from sidecar.taps.vllm_spans import VllmSpanHandler
from sidecar.timeline import Timeline

REPO = Path(__file__).resolve().parents[1]
POLL_S, UPDATE_S, POWER_W = 0.02, 0.1, 500.0
ROW_BYTES = 8 * 8  # a pending work row: 8 float64 columns (sidecar.attribution.intake)


def counter_timeline(t0_s: float, t1_s: float) -> Timeline:
    """A one-device timeline with edges every ``UPDATE_S`` over ``[t0_s, t1_s]`` (monotonic s)."""
    timeline = Timeline([DeviceInfo("GPU-0", "synthetic")])
    t = t0_s
    while t <= t1_s:
        shown = POWER_W * UPDATE_S * int((t - t0_s) / UPDATE_S)  # published every UPDATE_S
        timeline.add(Reading(t, (shown,)))
        t += POLL_S
    return timeline


def take(payloads: list[bytes], handler: VllmSpanHandler, attributor: Attributor) -> int:
    """Each export through the lean decode, the span handler and the attributor; the work rows made."""
    rows_made = 0
    for payload in payloads:
        rows, _ = decode_rows(payload, ROW_SPEC)
        out = TapOutput()
        handler.handle_rows(rows, out)
        handler.flush(out)
        rows_made += sum(len(event) for event in out.events)  # type: ignore[arg-type]
        attributor.ingest(out.events, out.infos)
    return rows_made


def sites(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> list[tuple[str, int]]:
    """Growth by the innermost frame in this repository's code (a library's allocation goes to the line
    of ours that asked for it), largest first."""
    growth: dict[str, int] = {}
    for stat in after.compare_to(before, "traceback"):
        ours = [f for f in stat.traceback if f.filename.startswith(str(REPO / "sidecar"))]
        frame = ours[-1] if ours else stat.traceback[-1]  # frames run oldest to newest
        name = (
            f"{Path(frame.filename).resolve().relative_to(REPO) if ours else frame.filename}:{frame.lineno}"
        )
        growth[name] = growth.get(name, 0) + stat.size_diff
    return sorted(growth.items(), key=lambda kv: -kv[1])


def fresh_pipeline(payloads: list[bytes], *, trace: bool) -> tuple[float, int, int, list[tuple[str, int]]]:
    """A new timeline, attributor and span handler take ``payloads``: the RSS growth (bytes), the work
    rows made, the requests in flight and, with ``trace``, the allocations' growth by site."""
    offset_s = time.monotonic() - time.time()
    timeline = counter_timeline(time.monotonic() - 10.0, time.monotonic())
    attributor = build_attributor(SidecarConfig(), timeline, FloorEstimate("GPU-0"), "replay")
    handler = VllmSpanHandler(lambda unix_s: unix_s + offset_s)
    gc.collect()
    if trace:
        tracemalloc.start(12)
    rss0, before = status_mb(os.getpid(), "VmRSS"), tracemalloc.take_snapshot() if trace else None
    rows_made = take(payloads, handler, attributor)
    gc.collect()
    rss1, growth = status_mb(os.getpid(), "VmRSS"), []
    if before is not None:
        growth = sites(before, tracemalloc.take_snapshot())
        tracemalloc.stop()
    return (rss1 - rss0) * 1024 * 1024, rows_made, len(attributor.requests), growth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20_480, help="spans taken in (exports of 512)")
    ap.add_argument("--top", type=int, default=8, help="allocation sites printed")
    args = ap.parse_args()
    exports = build_exports(8)
    now_ns = time.time_ns()
    payloads = [
        exports[k % 8].stamped(now_ns, k * EXPORT_SPANS) for k in range(args.requests // EXPORT_SPANS)
    ]
    n = len(payloads) * EXPORT_SPANS
    wire_b = sum(map(len, payloads)) / n
    rss_b = fresh_pipeline(payloads, trace=False)[
        0
    ]  # first untraced: tracemalloc's own bookkeeping is RSS too
    _, rows_made, in_flight, growth = fresh_pipeline(payloads, trace=True)
    total = sum(b for _, b in growth)
    print(f"{n} vLLM request spans taken in, none sealed: {in_flight} requests in flight")
    print(f"baseline: {wire_b:,.0f} bytes a span on the wire (its share of the OTLP exports)")
    print(f"live allocations added: {total / 1e6:.1f} MB, {total / n:,.0f} bytes a request "
          f"({total / n / wire_b:.1f}x its wire bytes)")  # fmt: skip
    print(f"RSS +{rss_b / 1e6:.1f} MB, {rss_b / n:,.0f} bytes a request (a run without tracemalloc: "
          "allocator slack and arrays' spare room included)")  # fmt: skip
    rows_b = rows_made * ROW_BYTES / n
    print(f"work rows: {rows_made / n:.1f} a span, {rows_b:,.0f} bytes a request as pending rows")
    print("by allocation site (the innermost line of the sidecar's code), bytes a request:")
    for name, size in growth[: args.top]:
        print(f"  {size / n:8,.0f}  {size / total:6.1%}  {name}")
    print(f"inflight bytes per request {total / n:.0f}")


if __name__ == "__main__":
    main()
