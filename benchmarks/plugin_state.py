"""What the vLLM plugin tap keeps after many requests: ids it claimed and finished (bounded tables).

``--requests`` requests (default 100,000) start and finish through :class:`PluginReceiver.feed`
(the datagram entry point, 100 rows a datagram, an iteration in each), as vLLM's plugin sends
them; the Python memory the receiver still holds afterwards is measured with tracemalloc
(traced bytes, not RSS: nothing else runs in this process). The receiver keeps the most
recent 100,000 ids, so this is its steady state on a busy server.

    .venv/bin/python benchmarks/plugin_state.py [--requests 100000]

Last line: ``plugin state MB N``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.taps.spans import TapOutput
from sidecar.taps.vllm_plugin import PluginReceiver

ROWS = 100  # rows per datagram


def feed_requests(rx: PluginReceiver, n: int) -> None:
    """``n`` requests started, then finished, ``ROWS`` per datagram."""
    seq = 0
    for k in range(0, n, ROWS):
        ids = [f"chatcmpl-{i:032x}" for i in range(k, min(n, k + ROWS))]
        parts = (
            {"start": [[rid, 100, 100, 0.01] for rid in ids]},
            {"fin": [[rid, 100, 20, 0.0, 0.01, 0.2, 0.3, "stop"] for rid in ids]},
        )
        for part in parts:
            msg = {"v": 1, "pid": 7, "seq": seq, "wall": 1000.0, "model": "m", "live": True}
            rx.feed(json.dumps({**msg, "it": [0.0, len(ids), 0, 0, 0], **part}).encode(), TapOutput())
            seq += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100_000)
    args = ap.parse_args()
    rx = PluginReceiver(lambda unix_s: unix_s - 900.0, port=0, wall=lambda: 1000.0)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    feed_requests(rx, args.requests)
    gc.collect()
    held_mb = (tracemalloc.get_traced_memory()[0] - base) / 1e6
    print(f"requests started {rx.counts['starts']}, finished {rx.counts['finished']}")
    print(f"plugin state MB {held_mb:.1f}")


if __name__ == "__main__":
    main()
