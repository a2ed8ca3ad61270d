"""The OTLP receiver's memory caps are knobs: spans queued between ticks, spans a tick hands on, pairs
kept to refuse retries."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from sidecar.app import Sidecar
from sidecar.config import SidecarConfig
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.otlp_drain import take
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


def test_otlp_drain_max_spans_is_what_a_tick_hands_on_the_rest_waits_oldest_first() -> None:
    receiver, sidecar = _receiver(otlp_drain_max_spans=2)
    try:
        assert not receiver.accept([_span(k) for k in range(5)])
        receiver.due(0.0)
        assert receiver.ignored == 2  # no handler claims these spans: each one handed on is counted
        assert receiver.accept([_span(5)]) == {}  # the queue keeps the other three, in order
        receiver.due(0.1)
        receiver.due(0.2)
        assert receiver.ignored == 6
    finally:
        sidecar.close()


def test_a_stopped_receiver_hands_on_all_it_holds() -> None:
    receiver, sidecar = _receiver(otlp_drain_max_spans=1)
    try:
        assert not receiver.accept([_span(k) for k in range(4)])
        receiver.due(0.0)
        receiver.stop()  # never started: stops nothing, but nothing more can come
        receiver.due(0.1)
        assert receiver.ignored == 4
    finally:
        sidecar.close()


def test_a_receiver_started_again_after_a_stop_keeps_its_drain_cap() -> None:
    receiver, sidecar = _receiver(otlp_drain_max_spans=1)
    receiver.port = 0  # a free port, not 4317
    try:
        receiver.stop()
        receiver.start()
        assert not receiver.accept([_span(k) for k in range(3)])
        receiver.due(0.0)
        assert receiver.ignored == 1  # one a tick again, not all that is queued
    finally:
        receiver.stop()
        sidecar.close()


def test_a_tick_takes_whole_exports_up_to_the_cap_and_counts_their_spans() -> None:
    rows = [("handler", [0] * 512) for _ in range(3)]  # an export's spans as columns: 512 a queue item
    queue: deque[Any] = deque([_span(0), *rows])
    items, n = take(queue, 1 + 3 * 512, 600)
    assert n == 1025 and len(items) == 3 and len(queue) == 1  # 513 < 600: one more export, whole
    items, n = take(queue, 512, 2048)
    assert n == 512 and len(items) == 1 and not queue  # all of it fits: taken whole
