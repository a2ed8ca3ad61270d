"""``benchmarks/memory.py``'s span flood: exporters that back off when the sidecar says so, as OTel's do.

``--exporters`` threads (default 8), each one OTLP exporter over one shared gRPC channel, send
vLLM-shaped exports of 512 spans (``otlp_flood.py``: serialised ahead, stamped at send time with
unique ids and times near now) one after another as fast as they are answered. An export refused
with ``UNAVAILABLE`` (the sidecar's backpressure, :mod:`sidecar.taps.otlp_limit`) is retried as
the Python OTLP exporter retries it: the same bytes again after the ``RetryInfo`` delay from the
trailing metadata (``google.rpc.retryinfo-bin``; else 1 s), at most :data:`MAX_ATTEMPTS` sends,
then given up (its spans lost at the client; the exporter's thread waits meanwhile, as a
synchronous exporter does). Every outcome is counted, so the memory figure says what it cost.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from otlp_flood import EXPORT_SPANS, MAX_ATTEMPTS, Export, open_export, retry_delay_s

__all__ = ["MAX_ATTEMPTS", "FloodCounts", "flood"]

_SERIALS = 1 << 40  # request ids per exporter thread (disjoint ranges)


@dataclass
class FloodCounts:
    """What the flood's exporters saw (exports are sends: a retry is another send)."""

    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **n: int) -> None:
        with self.lock:
            self.counts.update(n)

    def line(self) -> str:
        c = self.counts
        return (
            f"exports sent {c['sends']} (of which retries {c['retries']}); "
            f"refused retryable (UNAVAILABLE) {c['refused']} exports ({c['refused'] * EXPORT_SPANS} spans); "
            f"spans accepted {c['accepted_spans']}, in partial_success {c['rejected_spans']}, "
            f"given up after {MAX_ATTEMPTS} sends {c['given_up'] * EXPORT_SPANS}, "
            f"other failures {c['failed']} exports"
        )


def _exporter(export: Any, pool: list[Export], k: int, end: float, out: FloodCounts) -> None:
    serial, i = k * _SERIALS, k
    while time.monotonic() < end:
        data = pool[i % len(pool)].stamped(time.time_ns(), serial)
        i, serial = i + 1, serial + EXPORT_SPANS
        for attempt in range(MAX_ATTEMPTS):
            out.add(sends=1, retries=int(attempt > 0))
            try:
                response = export(data, timeout=60)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    out.add(failed=1)
                    break
                out.add(refused=1)
                if attempt + 1 == MAX_ATTEMPTS:
                    out.add(given_up=1)
                    break
                time.sleep(retry_delay_s(err))  # the flood's end does not cut a wait short
                continue
            rejected = response.partial_success.rejected_spans
            out.add(accepted_spans=EXPORT_SPANS - rejected, rejected_spans=rejected)
            break


def flood(port: int, pool: list[Export], seconds: float, exporters: int) -> FloodCounts:
    """``exporters`` exporters sending for ``seconds`` (each finishes its export's retries)."""
    channel, export = open_export(port)
    out, end = FloodCounts(), time.monotonic() + seconds
    threads = [
        threading.Thread(target=_exporter, args=(export, pool, k, end, out), daemon=True)
        for k in range(exporters)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    channel.close()
    return out
