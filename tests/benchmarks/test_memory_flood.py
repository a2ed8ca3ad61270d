"""benchmarks/memory.py's flood exporters (benchmarks/memory_flood.py): refused as retryable, they
wait the RetryInfo delay and send the same export again, and every outcome is counted."""

from __future__ import annotations

import sys
from pathlib import Path

from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.otlp_limit import ExportLimiter, Refusal
from sidecar.taps.spans import WallToMono
from sidecar.taps.vllm_spans import VllmSpanHandler

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # memory_flood, otlp_flood

from memory_flood import flood
from otlp_flood import EXPORT_SPANS, build_exports


class RefuseEveryOther(ExportLimiter):
    """Refuses the 1st, 3rd, ... export (retry delay 0.05 s): each export is taken on its retry."""

    def __init__(self) -> None:
        super().__init__(retry_delay_s=0.05)
        self.calls = 0

    def refusal(self) -> Refusal | None:
        self.calls += 1
        return Refusal("backlog", "test") if self.calls % 2 else None


def test_refused_exports_are_retried_after_the_delay_and_counted() -> None:
    limiter = RefuseEveryOther()
    rx = OtlpReceiver([VllmSpanHandler(WallToMono())], port=0, limiter=limiter, max_queued_spans=1 << 20)
    rx.start()
    try:
        counts = flood(rx.port, build_exports(2), seconds=0.3, exporters=1).counts
    finally:
        rx.stop(0)
    exports = counts["sends"] - counts["refused"]
    assert counts["refused"] == counts["retries"] == exports >= 1  # each refused once, taken on its retry
    assert counts["accepted_spans"] == exports * EXPORT_SPANS == rx.received
    assert rx.stats().events[("otlp", "refused_backlog")] == counts["refused"]
    assert counts["given_up"] == counts["failed"] == 0
