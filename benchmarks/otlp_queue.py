"""What the OTLP receiver holds per vLLM span between two ticks (tracemalloc), the queue and the retry keys.

The product's receiver (:class:`~sidecar.taps.otlp.OtlpReceiver` with the wiring's
handlers: diffusion, vLLM) takes ``--exports`` exports of 512 vLLM-shaped spans
(``otlp_flood.py``, as ``ingest_grpc.py`` and ``memory.py`` send them) through its
gRPC method, without a tick in between, so they all wait in its queue (knob
``otlp_max_queued_spans``, 10,000 by default). Measured with ``tracemalloc``:
the bytes allocated per queued span, with the retry-check keys (``otlp_dedupe_spans``
remembered) and without them (one remembered, the least it keeps): the queue alone.

Ends with one line ``queue bytes per span N`` (without the keys).

    .venv/bin/python benchmarks/otlp_queue.py [--exports 19]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the sidecar package
sys.path.insert(0, str(Path(__file__).resolve().parent))

from otlp_flood import EXPORT_SPANS, build_exports

from sidecar.taps.diffusion import DiffusionSpanHandler
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import WallToMono
from sidecar.taps.vllm_spans import VllmSpanHandler


class _Context:
    def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"export refused: {code} {details}")


def queued_bytes_per_span(exports: list[bytes], remembered: int) -> float:
    """Bytes allocated per span while ``exports`` wait in a fresh receiver's queue."""
    to_mono = WallToMono()
    rx = OtlpReceiver(
        [DiffusionSpanHandler(to_mono), VllmSpanHandler(to_mono)],
        max_queued_spans=len(exports) * EXPORT_SPANS,
        max_remembered_spans=remembered,
    )
    rx.export(exports[0], _Context())  # first: imports and caches, not counted
    rx.due(0.0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for data in exports[1:]:
        rx.export(data, _Context())
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    if rx.counts["received"] != len(exports) * EXPORT_SPANS or rx.dropped:
        raise SystemExit(f"not every span was queued: {dict(rx.counts)}")
    return held / ((len(exports) - 1) * EXPORT_SPANS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exports", type=int, default=19, help="exports of 512 spans (19: 9,728 spans)")
    args = parser.parse_args()
    pool = build_exports(4)
    exports = [pool[k % len(pool)].stamped(time.time_ns(), k * EXPORT_SPANS) for k in range(args.exports)]
    with_keys = queued_bytes_per_span(exports, remembered=20_000)
    alone = queued_bytes_per_span(exports, remembered=1)  # one retry key kept (the least the receiver keeps)
    spans = (args.exports - 1) * EXPORT_SPANS
    print(f"{spans} vLLM spans queued: {with_keys:.0f} bytes a span with its retry key, {alone:.0f} without")
    print(f"queue bytes per span {alone:.0f}")


if __name__ == "__main__":
    main()
