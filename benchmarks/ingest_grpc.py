"""vLLM-shaped spans per second over real OTLP/gRPC into attribution, the sidecar pinned to one core.

Two processes. The sidecar (its process: :mod:`ingest_sidecar`), pinned to one core
(``os.sched_setaffinity``), is the product's own: :func:`sidecar.wiring.build_sidecar`,
:func:`sidecar.gc_tune.tune_gc` (as ``jouletrace sidecar`` calls it after the build) and
:meth:`Sidecar.run` (its ticker, poller thread and HTTP server), so spans go through the real
:class:`~sidecar.taps.otlp.OtlpReceiver` (gRPC, protobuf decode, checks, dedupe), the real
:class:`~sidecar.taps.vllm_spans.VllmSpanHandler` (request infos, whole-phase work on the step
clock) and the real attribution (timeline, fitted rule, sealing, final records, histograms, a
SQLite ledger file). There is no GPU here, so the meter is ``--meter replay`` playing a
synthetic trace (one device, 450-550 W, counter updating every 100 ms, read
every 20 ms): a fake meter, said so. No plugin or hook: the spans supply the work.

The client, pinned to another core, sends ``llm_request`` spans with the
attributes vLLM 0.x sets (``do_tracing`` in ``vllm/v1/engine/output_processor.py``:
latencies, token counts, request id, sampling parameters), unique request,
trace and span ids, in exports of 512 spans (the OTel BatchSpanProcessor's
default), up to ``--in-flight`` exports outstanding and at most ``--window``
spans sent but not yet handled (6,144: with the exports in flight, below the
receiver's queue of ``otlp_max_queued_spans`` 10,000, so the queue never
overflows: the rate is what the sidecar sustains, not what it drops; the
default was 20,480, over the queue, and ~20 % of the spans were refused). The sidecar runs
with its default knobs, so its backpressure is on (:mod:`sidecar.taps.otlp_limit`: an export
refused with UNAVAILABLE while too much work waits to be sealed); the client sends a refused
export again after its ``RetryInfo`` delay, as OTel's exporters do, up to 6 sends, and says how
many it sent again and gave up. ``--pool`` exports are
serialised before the clock starts; at send time only each span's times, trace
id and request id are written into a copy of the bytes (their offsets found
once by sentinel values), so ids are unique and each span ends just before it
is sent, as a flooded BatchSpanProcessor's do, after 0.3-1.8 s (short chat
requests; work older than ``settle_s`` would only be counted late). Before
the timed flood, ``--warmup-s`` of 2,000 spans/s let the fitted rule warm up
(as in a sidecar that has been running) and become final (the first ~2 s of
spans carry work from before the sidecar's timeline began: dropped as late,
their records ``energy_unknown``; the fit needs 50 busy ticks, 5 s at one
counter update per 100 ms). The sidecar process waits for the client's word
without blocking its event loop (a blocking read had stopped its ticks through
the whole warm-up: half the warm-up spans were refused, the rest handled late,
and the fit was never ready).

Measured in the sidecar process (sampled on its event loop, between ticks):
spans handled by the span handler, whose request infos and work went to the
attributor in the same tick; final records; its CPU time (``time.process_time``,
all its threads). ``spans/s`` = spans handled / wall seconds from the first
send to the last span handled; CPU seconds per 1000 spans over the same
stretch, and up to the last record final. Baseline in the same run: the same exports,
another process on the same core that only receives them over gRPC and decodes
them (``ExportTraceServiceRequest.FromString``), the floor for any receiver in Python.

The sidecar's CPU per span is also split by stage (:mod:`stage_cpu`: receive, span handler,
work rows, attribution intake, sealing, final records, the rest of a tick's advance, metrics,
ledger, the rest of the process), so a change to one part shows where it moved the time, and the
work rows a span brings (the span handler's output). Last, for scale: an upper estimate of the
spans a second the study's busiest GPUs would send a sidecar (:mod:`study_rate`), and the share of a
core the sidecar would spend at that rate at the CPU per span measured here.

The sidecar's knobs are its defaults unless ``--knob NAME=VALUE`` sets one (as the command line
would). The run says which, and the ceiling the tick's drain puts on the rate whatever a span costs:
``otlp_drain_max_spans`` a tick (2,048), a tick every ``tick_interval_s`` (0.1 s), so at most 20,480
spans/s handled with the defaults; ``ledger_path=`` runs it with no ledger file (the last final
records kept in an in-memory SQLite table, as the sidecar does without one).

Ends with one line ``spans/s N``.

    .venv/bin/python benchmarks/ingest_grpc.py [--spans 200000] [--max-send-s 45] [--window 6144]
        [--knob NAME=VALUE ...]   (sidecar knobs over the defaults, e.g. otlp_drain_max_spans=8192)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the sidecar package
sys.path.insert(0, str(Path(__file__).resolve().parent))  # otlp_flood, also when loaded by path

from ingest_sidecar import sidecar_process
from otlp_flood import EXPORT_SPANS, METHOD, Export, build_exports, send_all
from study_rate import for_scale


# ---- the baseline server process (the sidecar's: ingest_sidecar.py) --------------------------
def decode_only(conn: Connection, core: int, progress: Any) -> None:
    """Baseline: gRPC receive + protobuf decode on one core, nothing else."""
    os.sched_setaffinity(0, {core})
    from concurrent import futures

    decoded = [0]
    last = [0.0]

    def handle(payload: bytes, context: Any) -> ExportTraceServiceResponse:
        request = ExportTraceServiceRequest.FromString(payload)
        decoded[0] += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        progress.value = decoded[0]
        last[0] = time.monotonic()
        return ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rpc = grpc.unary_unary_rpc_method_handler(
        handle, response_serializer=ExportTraceServiceResponse.SerializeToString
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(METHOD.split("/")[1], {"Export": rpc}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    conn.send(port)
    conn.recv()  # the warm-up was sent
    decoded[0] = progress.value = 0
    cpu0 = time.process_time()
    conn.send("go")
    conn.recv()  # the client is done
    conn.send({"handled": decoded[0], "t_last": last[0], "cpu_s": time.process_time() - cpu0})
    server.stop(0)


def run_server(
    target: Callable[..., None], pool: list[Export], cores: tuple[int, int], args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, float]]:
    """Start ``target`` on the server core, send from the client core, collect both sides' figures."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    progress = ctx.Value("q", 0, lock=False)  # spans handled so far, for the client's window
    knobs = dict(kv.split("=", 1) for kv in args.knob)
    if args.max_pending_rows:
        knobs["max_pending_rows"] = str(args.max_pending_rows)
    extra = (args.max_wait_s, args.verbose, knobs) if target is sidecar_process else ()
    proc = ctx.Process(target=target, args=(child, cores[0], progress, *extra))
    proc.start()
    port = parent.recv()
    warm = send_all(port, pool, args.warmup_s * 2000, 1, args.warmup_s, serial=1 << 40, rate_spans_s=2000)
    parent.send(warm["sent"] - warm["rejected"] - warm["given_up"])
    if not parent.poll(120) or parent.recv() != "go":
        proc.kill()
        raise SystemExit(f"{target.__name__}: not ready after the warm-up")
    client = send_all(
        port, pool, args.spans, args.in_flight, args.max_send_s, handled=progress, window=args.window
    )
    parent.send(client["sent"] - client["rejected"] - client["given_up"])
    if not parent.poll(args.max_wait_s + 240):  # a tick that never returns: say so, do not hang
        proc.kill()
        raise SystemExit(
            f"{target.__name__}: no report within {args.max_wait_s + 240:.0f} s of the last send"
        )
    report: dict[str, Any] = parent.recv()
    proc.join(timeout=60)
    return report, client


def drain_cap(config: dict[str, Any], knobs: list[str]) -> str:
    """The spans a second the tick's drain lets through, however cheap a span: ``otlp_drain_max_spans``
    a tick (whole exports: these exports of 512 fill 2,048 exactly), a tick every ``tick_interval_s``
    at the most."""
    most = config["otlp_drain_max_spans"] / config["tick_interval_s"]
    ledger = "a ledger file" if config["ledger_path"] else "no ledger file (the last records in memory)"
    return (
        f"  knobs over the defaults: {', '.join(knobs) or 'none'}; {ledger}; the tick's drain "
        f"({config['otlp_drain_max_spans']} spans a tick, every {config['tick_interval_s']} s) "
        f"hands on at most ~{most:,.0f} spans/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000, help="spans to send (exports of 512)")
    parser.add_argument("--max-send-s", type=float, default=45.0, help="stop sending after this long (s)")
    parser.add_argument("--pool", type=int, default=16, help="different exports to cycle through")
    parser.add_argument("--in-flight", type=int, default=4, help="exports outstanding at once")
    parser.add_argument("--window", type=int, default=6_144, help="most spans sent and not yet handled")
    parser.add_argument("--max-wait-s", type=float, default=30.0, help="wait for final records (s)")
    parser.add_argument(
        "--warmup-s", type=int, default=8, help="seconds of 2,000 spans/s first (fit warm-up)"
    )
    parser.add_argument("--verbose", action="store_true", help="the sidecar's progress every 5 s")
    parser.add_argument(
        "--max-pending-rows",
        type=int,
        default=0,
        help="the sidecar's max_pending_rows (0: its default, 500,000); a span brings two work rows "
        "(a prefill and a decode; the run prints how many), held for settle_s, so a fast "
        "enough flood reaches the cap and work is refused (pending_cap below), which also spares the "
        "sidecar the sealing of that work",
    )
    parser.add_argument(
        "--knob", action="append", default=[], metavar="NAME=VALUE", help="a sidecar knob over its default"
    )
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    pair = (cores[0], cores[-1])
    os.sched_setaffinity(0, {pair[1]})
    t = time.perf_counter()
    pool = build_exports(args.pool)
    print(
        f"{args.spans} spans in exports of {EXPORT_SPANS} ({len(pool[0].data) / 1024:.0f} KiB each; "
        f"{args.pool} different ones built in {time.perf_counter() - t:.1f} s, stamped with unique ids "
        f"and times at send); server on core {pair[0]}, client on core {pair[1]}"
        + (" (only one core: shared)" if pair[0] == pair[1] else "")
    )
    base, base_client = run_server(decode_only, pool, pair, args)
    base_rate = base["handled"] / (base["t_last"] - base_client["t0"])
    print(
        f"baseline (gRPC receive + protobuf decode only): {base_rate:10,.0f} spans/s   "
        f"{base['cpu_s'] / base['handled'] * 1000:.3f} CPU s per 1000 spans"
    )
    side, client = run_server(sidecar_process, pool, pair, args)
    wall_s = side["t_last"] - client["t0"]
    rate = side["handled"] / wall_s
    print(
        f"sidecar (receiver, vLLM span handler, attribution): {rate:10,.0f} spans/s   "
        f"{side['cpu_s'] / side['handled'] * 1000:.3f} CPU s per 1000 spans "
        f"({side['handled'] / side['cpu_s']:,.0f} spans per CPU-second; {rate / base_rate:.2f}x the baseline)"
    )
    final_s = side["t_final"] - client["t0"] if side["t_final"] else float("nan")
    print(
        f"  sent {client['sent']}, refused in partial_success {client['rejected']}, refused retryably "
        f"(UNAVAILABLE: backpressure) and sent again {client['refused']} exports, given up "
        f"{client['given_up']} spans, failed exports {client['failed']}; handled {side['handled']} in "
        f"{wall_s:.1f} s; final records {side['finals']} "
        f"after {final_s:.1f} s (settle_s 2 s + warm-up), CPU to all final "
        f"{side['cpu_final_s'] / max(side['finals'], 1) * 1000:.3f} s per 1000"
    )
    print(f"  client CPU {client['client_cpu_s'] / max(client['sent'], 1) * 1000:.3f} s per 1000 spans")
    print(
        f"  warm-up first ({args.warmup_s} s at 2,000 spans/s): {side['warm'][0]} spans handled, "
        f"{side['warm'][1]} final, fitted rule ready {side['warm'][2]}; counts below include it"
    )
    print(
        f"  the sidecar's CPU per span handled, by stage (benchmarks/stage_cpu.py; "
        f"{side['rows_per_span']:.1f} work rows a span):"
    )
    print("\n".join(side["stages"]))
    print(f"  receiver: {side['tap']}")
    print(f"  attribution drops: {side['dropped']}")
    print(drain_cap(side["config"], args.knob))
    print(for_scale(rate, side["cpu_s"] / side["handled"]))
    print(f"spans/s {rate:.0f}")


if __name__ == "__main__":
    main()
