"""CPU time of a running sidecar by stage: which part of the span path a span's microseconds go to.

:func:`instrument` wraps a few methods of the product classes (in the process that runs the
sidecar, before it is built) so each call adds its thread's CPU time (``time.thread_time``) to
its stage; a stage called inside another (final records inside a tick's advance) is taken out
of the outer one, so the stages add up. Calls are per export, per drain or per tick, never per
span, so the timing itself costs a few microseconds a call. :meth:`StageCpu.reset` starts the
count (after a warm-up); :meth:`StageCpu.lines` says microseconds per span for each stage and
the rest of the process's CPU (the event loop, ticks' bookkeeping, the poller, the collector).

Used by ``benchmarks/ingest_grpc.py``: the figures are its run's, not a profiler's samples.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["STAGES", "StageCpu", "instrument"]

# (stage, class path, method or methods): the span path in the order a span meets it
STAGES: tuple[tuple[str, str, str | tuple[str, ...]], ...] = (
    ("receive (gRPC threads: decode, checks, queue)", "sidecar.taps.otlp:OtlpReceiver", "receive"),
    (
        "span handler (ids, duplicates, infos, task joins)",
        "sidecar.taps.vllm_spans:VllmSpanHandler",
        "handle_rows",
    ),
    ("work rows (step clock fit and cut)", "sidecar.taps.vllm_spans:VllmSpanHandler", "flush"),
    ("attribution intake (infos, work queued)", "sidecar.attribution.engine:Attributor", "ingest"),
    ("sealing (ticks split over requests)", "sidecar.attribution.sealing:TickSealer", "_seal"),
    ("final records (built, ids remembered)", "sidecar.attribution.lifecycle:RequestLifecycle", "_finals"),
    ("advance, the rest (pending, due checks)", "sidecar.attribution.engine:Attributor", "advance"),
    ("metrics (histograms, aggregates)", "sidecar.export.metrics:MetricsExporter", "record"),
    # a tick's final records go in with put_new (written together, every ledger_write_every_s);
    # flush writes what waits when a tick has none (put_many, which a stop uses, is not on the path)
    ("ledger (rows, JSON, SQLite)", "sidecar.export.store:Ledger", ("put_new", "flush")),
)


class StageCpu:
    """CPU seconds per stage (exclusive of the stages called inside it) and the process's total."""

    def __init__(self) -> None:
        self.seconds = {name: 0.0 for name, _, _ in STAGES}
        self._lock = threading.Lock()
        self._local = threading.local()  # per thread: the CPU of inner stages of the calls open
        self._process0 = time.process_time()

    def reset(self) -> None:
        with self._lock:
            self.seconds = dict.fromkeys(self.seconds, 0.0)
            self._process0 = time.process_time()

    def timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            inner: list[float] = getattr(self._local, "inner", None) or []
            self._local.inner = inner
            inner.append(0.0)
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - t0
                own = spent - inner.pop()
                if inner:
                    inner[-1] += spent  # the caller's stage does not count it again
                with self._lock:
                    self.seconds[name] += own

        return wrapper

    def lines(self, spans: int) -> list[str]:
        """Microseconds per span by stage, the rest of the process, and the total."""
        with self._lock:
            seconds = dict(self.seconds)
            total_s = time.process_time() - self._process0
        rest_s = total_s - sum(seconds.values())
        rows = [*seconds.items(), ("the rest of the process (loop, ticks, poller, collector)", rest_s)]
        out = [f"    {name:<58} {s / spans * 1e6:7.1f} us  {100 * s / total_s:5.1f} %" for name, s in rows]
        out.append(f"    {'total':<58} {total_s / spans * 1e6:7.1f} us  (50,000 spans/s on one core: 20 us)")
        return out


def instrument() -> StageCpu:
    """Wrap the stages' methods in this process (before the sidecar is built); returns the counts."""
    import importlib

    clock = StageCpu()
    for name, where, methods in STAGES:
        module, cls_name = where.split(":")
        cls = getattr(importlib.import_module(module), cls_name)
        for method in (methods,) if isinstance(methods, str) else methods:
            setattr(cls, method, clock.timed(name, getattr(cls, method)))
    return clock
