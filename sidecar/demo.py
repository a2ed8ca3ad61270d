"""``make demo``: the sidecar on a simulated GPU, a short workload, per-request joules.

Everything here runs the real sidecar path — meter thread, timeline, attribution,
exporters, HTTP server — in real time. Only the GPU is simulated (there is no
NVIDIA GPU on the CPU default), so every energy figure printed is SIMULATED and
says so. Because the simulator knows the exact energy each request caused, the
demo also shows how far the attribution is from that truth.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import numpy as np

from sidecar.app import Sidecar
from sidecar.attribution.records import RequestEnergy
from sidecar.config import SidecarConfig
from sidecar.sim.meter import SimFeeder, SimMeter
from sidecar.sim.run import MODEL_NAME, SimConfig, SimRun, simulate
from sidecar.taps.tap import SourceTap

__all__ = ["run_demo"]

BANNER = "SIMULATED GPU: energy comes from a simulator with known ground truth, not from a measurement"


def _workload(n_requests: int, seed: int) -> SimRun:
    base = SimConfig()
    workload = replace(
        base.workload, n_requests=n_requests, start_s=1.0, burst_size=max(n_requests // 2, 1), burst_gap_s=4.0
    )
    return simulate(replace(base, workload=workload), seed)


async def _serve(sidecar: Sidecar, run_s: float, speed: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(sidecar.run(stop))
    start = time.monotonic()
    wall_s = run_s / speed
    while time.monotonic() - start < wall_s:
        await asyncio.sleep(0.5)
        done = int(100 * min((time.monotonic() - start) / wall_s, 1.0))
        print(
            f"\r  running ... {done:3d} %  (http://127.0.0.1:{sidecar.http_port}/metrics)", end="", flush=True
        )
    print()
    stop.set()
    await task


def run_demo(*, n_requests: int, seed: int, port: int, speed: float, rows: int) -> int:
    """Run the demo; return the process exit code."""
    print(BANNER)
    run = _workload(n_requests, seed)
    print(
        f"workload: {n_requests} requests (prefill-heavy, decode-heavy, mixed) in two bursts, "
        f"{run.duration_s:.1f} s of simulated serving at {speed:g}x"
    )
    t_start = time.monotonic()

    def clock() -> float:
        return t_start + (time.monotonic() - t_start) * speed

    config = SidecarConfig(
        meter="sim", model=MODEL_NAME, port=port, host="127.0.0.1", settle_s=0.5, fit_warmup_ticks=100
    )
    t0 = clock() + 0.2
    finals: list[RequestEnergy] = []
    sidecar = Sidecar(
        config,
        SimMeter(run, clock=clock, t0=t0),
        taps=[SourceTap(SimFeeder(run, t0))],
        clock=clock,
        on_final=finals.extend,
    )
    try:
        asyncio.run(_serve(sidecar, run.duration_s + 3.0, speed))
        sidecar.tick(seal_until_s=float("inf"))  # its finals reach `finals` through on_final
    finally:
        sidecar.close()
    _report(run, finals, sidecar, rows)
    return 0 if len(finals) == n_requests else 1


def _report(run: SimRun, finals: list[RequestEnergy], sidecar: Sidecar, rows: int) -> None:
    by_id = {r.request_id: r for r in finals}
    kind = {q.request_id: q.kind for q in run.workload}
    print(f"\nper-request energy [{BANNER.split(':')[0]}], split rule: {sidecar.config.split}")
    print(
        f"{'request':<11} {'task':<14} {'prompt':>6} {'output':>6} {'energy J':>9} {'truth J':>8} "
        f"{'error':>7} {'J/token':>8}"
    )
    shown = sorted(by_id.values(), key=lambda r: r.start_s or 0.0)
    step = max(len(shown) // max(rows, 1), 1)
    for rec in shown[::step][:rows]:
        truth = run.truth_j[rec.request_id]
        jpt = rec.joules_per_output_unit or 0.0
        flag = " ~" if rec.approximate else ""
        print(
            f"{rec.request_id:<11} {kind[rec.request_id]:<14} {rec.prompt_tokens:>6} {rec.output_tokens:>6} "
            f"{rec.energy_j:9.2f} {truth:8.2f} {100 * (rec.energy_j - truth) / truth:+6.1f}% {jpt:8.3f}{flag}"
        )
    print("\nJ per output token by task (simulated):")
    for task in sorted(set(kind.values())):
        recs = [r for r in finals if kind[r.request_id] == task]
        joules = sum(r.energy_j for r in recs)
        tokens = sum(r.output_tokens for r in recs)
        print(f"  {task:<14} {joules / max(tokens, 1):7.3f} J/token  ({len(recs)} requests, {joules:8.1f} J)")
    totals = sidecar.attributor.totals
    errors = np.array(
        [abs(r.energy_j - run.truth_j[r.request_id]) / run.truth_j[r.request_id] for r in finals]
    )
    fit = sidecar.attributor.rule.fit.snapshot() if hasattr(sidecar.attributor.rule, "fit") else None
    print(
        f"\nmeasured {totals.measured_j:.1f} J = requests {totals.attributed_j:.1f} J "
        f"+ idle {totals.idle_j:.1f} J (conservation error {totals.conservation_error_j:.2e} J)"
    )
    if errors.size:
        print(
            f"vs. simulator truth: median error {100 * np.median(errors):.2f} %, "
            f"p95 {100 * np.percentile(errors, 95):.2f} %"
        )
    if fit is not None:
        print(
            f"fitted model: static {fit.static_w:.0f} W, {fit.j_per_step:.2f} J/step, "
            f"prefill {1e3 * fit.j_per_prefill_token:.1f} mJ/token, "
            f"decode {1e3 * fit.j_per_decode_token:.1f} mJ/token (R^2 {fit.r2:.3f})"
        )
    print(
        f"({len(finals)} of {len(run.workload)} requests final; '~' = approximate: shorter than one "
        f"counter update)"
    )
