"""The OTLP receiver's memory caps are knobs: spans queued between ticks, pairs kept to refuse retries."""

from __future__ import annotations

import time

from sidecar.app import Sidecar
from sidecar.config import SidecarConfig
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import ReceivedSpan
from sidecar.wiring import build_sidecar


def _span(k: int) -> ReceivedSpan:
    now_s = time.time()
    return ReceivedSpan("trace", f"span{k}", "", "unclaimed", now_s - 1.0, now_s, {})


def _receiver(**knobs: int) -> tuple[OtlpReceiver, Sidecar]:
    config = SidecarConfig(meter="cpu-model", port=0, otlp_port=4317, plugin_port=0, hook_port=0,
                           ledger_path="", **knobs)  # type: ignore[arg-type]  # fmt: skip
    sidecar = build_sidecar(config)  # built, not started
    return next(t for t in sidecar.taps if isinstance(t, OtlpReceiver)), sidecar


def test_otlp_max_queued_spans_caps_the_queue_between_ticks() -> None:
    receiver, sidecar = _receiver(otlp_max_queued_spans=3)
    try:
        refused = receiver.accept([_span(k) for k in range(5)])
        assert refused == {"queue_full": 2} and receiver.dropped == 2
        receiver.due(0.0)  # the tick drains the queue: room again
        assert not receiver.accept([_span(k) for k in range(5, 8)])
    finally:
        sidecar.close()


def test_a_span_refused_for_a_full_queue_is_taken_when_the_exporter_retries_it() -> None:
    receiver, sidecar = _receiver(otlp_max_queued_spans=1)
    try:
        assert receiver.accept([_span(0), _span(1)]) == {"queue_full": 1}
        receiver.due(0.0)
        assert not receiver.accept([_span(1)])  # the retry is not a duplicate: span1 was never kept
        assert receiver.accept([_span(0)]) == {"duplicate": 1}  # span0 was
    finally:
        sidecar.close()


def test_otlp_dedupe_spans_is_the_window_of_remembered_retries() -> None:
    receiver, sidecar = _receiver(otlp_dedupe_spans=2)
    try:
        assert not receiver.accept([_span(0), _span(1)])
        assert receiver.accept([_span(1)]) == {"duplicate": 1}  # within the window: a retry
        receiver.due(0.0)
        assert not receiver.accept([_span(2), _span(3)])
        assert not receiver.accept([_span(0)])  # forgotten: two newer pairs pushed it out
    finally:
        sidecar.close()
