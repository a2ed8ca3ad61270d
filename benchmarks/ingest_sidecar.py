"""The sidecar's side of ``ingest_grpc.py``: the product sidecar in its own process on one core.

:func:`sidecar_process` builds it as ``jouletrace sidecar`` does (:func:`sidecar.wiring.build_sidecar`,
:func:`sidecar.gc_tune.tune_gc`, :meth:`Sidecar.run`) on a replay meter playing a synthetic trace
(:func:`_replay_trace`: there is no GPU here), with the benchmark's ports and ledger file and any
``--knob`` over its defaults (:func:`_config`). It times the span path's stages
(:mod:`stage_cpu`) from the timed flood on, samples its counters between ticks (:func:`_watch`) and
sends ``ingest_grpc.py`` its report, with the knobs :func:`ingest_grpc.drain_cap` reads
(:data:`DRAIN_KNOBS`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from scratch import scratch_dir
from stage_cpu import instrument

from sidecar.config import SidecarConfig, load_config
from tests.support import free_port

__all__ = ["DRAIN_KNOBS", "sidecar_process"]


def _replay_trace(path: Path, seconds: float) -> None:
    """A synthetic one-device trace: 450-550 W, the counter updating every 100 ms, read every 20 ms."""
    rng = np.random.default_rng(1)
    lines = ["# jouletrace replay trace v1", "# synthetic: benchmarks/ingest_grpc.py", "t_s,device,energy_j"]
    energy_j = 1_000_000.0
    for k in range(int(seconds / 0.02)):
        if k % 5 == 0:
            energy_j += float(rng.uniform(45.0, 55.0))
        lines.append(f"{k * 0.02:.6f},GPU-bench,{energy_j:.3f}")
    path.write_text("\n".join(lines) + "\n")


def _config(tmp: Path, knobs: dict[str, str]) -> SidecarConfig:
    """The sidecar's config as the command line would set it: the replay meter on a trace written
    to ``tmp``, free ports, the ledger file in ``tmp``, no plugin, hook or proxy tap; ``knobs``
    (NAME -> VALUE, ``--knob``) over these and the defaults."""
    _replay_trace(tmp / "trace.csv", 400.0)
    return load_config(
        {
            "meter": "replay",
            "replay_path": str(tmp / "trace.csv"),
            "model": "bench-llm",
            "port": free_port(),
            "otlp_port": free_port(),
            "plugin_port": 0,
            "hook_port": 0,
            "proxy_wire_port": 0,
            "ledger_path": str(tmp / "ledger.db"),
            "log_level": "warning",
            **knobs,
        },
        environ={},
    )


DRAIN_KNOBS = ("otlp_drain_max_spans", "tick_interval_s", "ledger_path")  # what drain_cap reads


def sidecar_process(
    conn: Connection, core: int, progress: Any, max_wait_s: float, verbose: bool, knobs: dict[str, str]
) -> None:
    """The product sidecar on one core; reports what it handled and when (``progress``: spans handled)."""
    os.sched_setaffinity(0, {core})
    with scratch_dir("jt-ingest-grpc-") as tmp:  # its ledger: hundreds of MB, removed at the end
        asyncio.run(_run_sidecar(conn, tmp, progress, max_wait_s, verbose, knobs))


async def _run_sidecar(
    conn: Connection, tmp: Path, progress: Any, max_wait_s: float, verbose: bool, knobs: dict[str, str]
) -> None:
    from sidecar.gc_tune import tune_gc
    from sidecar.taps.otlp import OtlpReceiver
    from sidecar.taps.vllm import VllmTaps
    from sidecar.wiring import build_sidecar

    stages = instrument()  # CPU per stage of the span path, counted from the timed flood on
    config = _config(tmp, knobs)
    sidecar = build_sidecar(config)
    tune_gc()  # as the sidecar's entry point does after building it
    (vllm,) = (t for t in sidecar.taps if isinstance(t, VllmTaps))
    (receiver,) = (t for t in sidecar.taps if isinstance(t, OtlpReceiver))
    finals = [0]
    forward = sidecar.on_final

    def count_finals(records: list[Any]) -> None:
        finals[0] += len(records)
        if forward is not None:
            forward(records)

    sidecar.on_final = count_finals
    rows = _count_work_rows(vllm.spans)
    stop = asyncio.Event()
    runner = asyncio.create_task(sidecar.run(stop))
    while receiver._server is None:  # started by run()
        await asyncio.sleep(0.01)
    conn.send(config.otlp_port)
    while not conn.poll():  # not conn.recv(): that would block the loop, its ticks, through the warm-up
        await asyncio.sleep(0.05)
    warm_n = conn.recv()  # the client's warm-up is sent: wait for it to be handled, final, the fit ready
    t_warm = time.monotonic()
    while not (vllm.spans.requests >= warm_n and finals[0] >= warm_n and sidecar.attributor.rule.ready):
        if time.monotonic() - t_warm > 60:
            break
        await asyncio.sleep(0.05)
    warm = (vllm.spans.requests, finals[0], sidecar.attributor.rule.ready)
    rows0 = rows[0]
    cpu0 = time.process_time()
    stages.reset()
    if verbose:
        print(f"[sidecar] pid {os.getpid()} warm {warm}, timed flood next", file=sys.stderr, flush=True)
    conn.send("go")
    # spans handled: their infos and work went to the attributor in the same tick
    report = await _watch(
        conn,
        lambda: vllm.spans.requests - warm[0],
        lambda: finals[0] - warm[1],
        progress,
        max_wait_s,
        verbose,
    )
    report["warm"] = warm
    report["rows_per_span"] = (rows[0] - rows0) / max(report["handled"], 1)
    report["stages"] = stages.lines(max(report["handled"], 1))
    report["cpu_s"] -= cpu0
    report["cpu_final_s"] -= cpu0
    stats = receiver.stats().events
    report["tap"] = {f"{tap}.{k}": n for (tap, k), n in sorted(stats.items()) if n}
    report["dropped"] = {k: n for k, n in sidecar.attributor.dropped.items() if n}
    report["config"] = {k: getattr(config, k) for k in DRAIN_KNOBS}
    conn.send(report)
    stop.set()
    await runner


def _count_work_rows(handler: Any) -> list[int]:
    """A running count of the work rows the span handler hands on (its ``flush``, wrapped here)."""
    rows = [0]
    flush = handler.flush

    def counted(out: Any) -> None:
        before = len(out.events)
        flush(out)
        rows[0] += sum(len(work) for work in out.events[before:])

    handler.flush = counted
    return rows


async def _watch(
    conn: Connection,
    handled: Callable[[], int],
    finals: Callable[[], int],
    progress: Any,
    max_wait_s: float,
    verbose: bool,
) -> dict[str, Any]:
    """Sample the counters between ticks until the client is done and every handled span is final."""
    last_n, t_last, cpu_last = 0, 0.0, 0.0
    sent: int | None = None
    t_done = 0.0
    t_final, cpu_final = 0.0, 0.0
    while True:
        await asyncio.sleep(0.01)
        now = time.monotonic()
        n = handled()
        if n != last_n:
            last_n, t_last, cpu_last = n, now, time.process_time()
            progress.value = n
        if verbose and int(now) % 5 == 0 and int(now) != int(now - 0.01):
            print(f"[sidecar] handled {n} finals {finals()} cpu {time.process_time():.1f}", file=sys.stderr)
        if sent is None and conn.poll():
            sent, t_done = conn.recv(), now
        if sent is None:
            continue
        if finals() >= last_n and not t_final:
            t_final, cpu_final = now, time.process_time()
        quiet = now - t_last > 3.0 and now - t_done > 3.0  # nothing more is coming
        if (last_n >= sent or quiet) and (t_final or now - t_done > max_wait_s):
            break
    return {
        "handled": last_n,
        "t_last": t_last,
        "cpu_s": cpu_last,
        "finals": finals(),
        "t_final": t_final,
        "cpu_final_s": cpu_final or time.process_time(),
    }
