"""The floor under ``memory.py``'s flood: a process that only receives and parses the same exports.

``benchmarks/memory.py`` floods the whole sidecar with vLLM-shaped spans and prints its RSS. Part
of that RSS is not the sidecar's state: the libraries' code (pages of files) and what gRPC and
protobuf hold while exports arrive. This runs the same flood (``memory_flood.py``: ``--exporters``
exporters, exports of 512 spans, the same pool) against a process that imports what the sidecar
imports, sets glibc's thresholds as the sidecar does (:func:`sidecar.malloc_tune.tune_malloc`, and
a trim every 2 s), and serves the OTLP trace service with the receiver's gRPC options and its four
worker threads, each export parsed as the receiver parses it (``LeanExport``) and dropped. It
answers far sooner than the sidecar, so it sees many more exports; what it holds at once is
bounded by the exporters' one export each in flight, as the sidecar's receive stage is.

Prints the RSS (with its parts, anonymous memory and pages of files) once imported, the highest
sampled every 0.2 s during the flood and after it; ends with ``receive only rss MB N``: N the
process's peak RSS (``VmHWM``).

    .venv/bin/python benchmarks/memory_receive.py [--flood-s 60] [--exporters 8]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory import POOL_EXPORTS  # noqa: E402
from memory_flood import flood  # noqa: E402
from memory_phases import Sampler, rss_split, status_mb  # noqa: E402
from otlp_flood import build_exports  # noqa: E402

_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def serve(conn: Connection) -> None:
    """The receive-only process: the sidecar's imports and allocator settings, a gRPC server that parses."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    import sidecar.cli_sidecar
    import sidecar.taps.otlp
    import sidecar.wiring  # noqa: F401  (what the sidecar imports: its floor)
    from sidecar.knobs import default
    from sidecar.malloc_tune import TRIM_EVERY_S, trim, tune_malloc
    from sidecar.taps.span_rows import LeanExport

    tune_malloc()
    parsed = [0]

    def export(payload: bytes, context: Any) -> ExportTraceServiceResponse:
        LeanExport.FromString(payload)
        parsed[0] += 1
        return ExportTraceServiceResponse()

    limit = 2 * int(default("otlp_max_message_bytes"))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.max_receive_message_length", limit)]
    )
    handler = grpc.unary_unary_rpc_method_handler(
        export, response_serializer=ExportTraceServiceResponse.SerializeToString
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, {"Export": handler}),))
    conn.send(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    while not conn.poll(TRIM_EVERY_S):  # the sidecar's periodic trim
        trim()
    conn.recv()
    conn.send(parsed[0])
    server.stop(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flood-s", type=float, default=60.0, help="seconds of span flood")
    ap.add_argument("--exporters", type=int, default=8, help="OTLP exporters in the flood (threads)")
    args = ap.parse_args()
    pool = build_exports(POOL_EXPORTS)
    ours, theirs = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=serve, args=(theirs,), daemon=True)
    proc.start()
    port, pid = ours.recv(), proc.pid
    assert pid is not None
    time.sleep(1.0)
    print(f"{'imported, serving':<24} rss {status_mb(pid, 'VmRSS'):7.1f} MB {rss_split(pid)}", flush=True)
    sampler = Sampler(pid)
    sampler.start()
    start = time.monotonic()
    sent = flood(port, pool, args.flood_s, args.exporters)
    end = time.monotonic()
    during = ", ".join(f"{mb:.0f}" for mb in sampler.maxima(start, end, 10.0))
    print(f"  flood: {sent.line()}", flush=True)
    print(f"  rss during the flood, highest per 10 s (MB): {during}", flush=True)
    highest = max(rss for _, rss in sampler.samples)
    print(f"{'flood, highest sample':<24} rss {highest:7.1f} MB {sampler.split_at_max}", flush=True)
    time.sleep(3.0)
    print(f"{'after the flood':<24} rss {status_mb(pid, 'VmRSS'):7.1f} MB {rss_split(pid)}", flush=True)
    peak_mb = status_mb(pid, "VmHWM")
    sampler.stop.set()
    ours.send("stop")
    print(f"exports parsed {ours.recv()}", flush=True)
    proc.join(timeout=30)
    print(f"receive only rss MB {peak_mb:.0f}")


if __name__ == "__main__":
    main()
