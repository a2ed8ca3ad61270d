"""CPU per attribution tick with 0 / 10k / 20k idle requests in flight.

Idle requests are known (a ``start`` without ``fin``, or a span-less info) but
do no work and have no end yet, as when vLLM holds many queued requests or a
tap saw starts whose finishes never came. A busy batch of 64 requests keeps
working and finishing meanwhile. The timed path is the live sidecar's tick:
``Attributor.advance`` once per 100 ms counter update, with the batch's work.

Baseline in the same run: the same attributor with the finalize pass of the
previous version (a scan of every live request each tick). Ends with one line
``idle 20000 tick ms N (baseline M)``.

    .venv/bin/python benchmarks/idle_requests.py [--ticks 300]
"""

from __future__ import annotations

import math
import time

import numpy as np
from side_by_side import tick_benchmark

from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import Phase, RequestInfo, WorkEvent
from sidecar.attribution.lifecycle import _EPS_S
from sidecar.attribution.record_batch import RecordBatch
from sidecar.attribution.rules import make_rule
from sidecar.meters.base import DeviceInfo, Reading
from sidecar.timeline import Timeline

TICK_S = 0.1
BATCH = 64


class ScanAttributor(Attributor):
    """The previous finalize pass: every live request looked at on every tick (the baseline)."""

    def _finalize(self, most: int | None = None) -> RecordBatch:  # builds all: most unused
        sealed = self._sealed_t
        if sealed is None:
            return RecordBatch()
        period = self.timeline.update_period_s() or 0.0
        live_work = self._pending.codes()
        slots: list[int] = []
        inferred: list[bool] = []
        for acc in self.requests.live():
            end = acc.info.end_s if acc.info is not None else None
            if end is None:
                last = acc.last_t if np.isfinite(acc.last_t) else None
                if last is None or sealed - last < self.request_timeout_s:
                    continue
            elif sealed < end + period - _EPS_S:
                continue
            code = self.requests.code(acc.request_id)
            if code in live_work and end is not None:
                continue
            slots.append(acc.slot)
            inferred.append(end is None)
        return self._finals(slots, inferred) if slots else RecordBatch()


def run(cls: type[Attributor], n_idle: int, n_ticks: int) -> tuple[float, int]:
    """CPU seconds per tick (median) and records finalized, for ``n_idle`` idle requests."""
    timeline = Timeline([DeviceInfo("GPU-bench", "bench GPU")])
    att = cls(timeline, make_rule("tokens"), request_timeout_s=600.0, unix_offset=lambda: 0.0)
    for k in range(n_idle):
        att.add_request(RequestInfo(f"idle{k}"))
    timeline.add(Reading(-0.01, (0.0,)))
    timeline.add(Reading(0.01, (10.0,)))
    att.advance(0.0)
    costs: list[float] = []
    done = 0
    next_id = 0
    live = [f"r{next_id + i}" for i in range(BATCH)]
    next_id += BATCH
    for tick in range(1, n_ticks + 1):
        t0, t1 = (tick - 1) * TICK_S, tick * TICK_S
        timeline.add(Reading(t1 - 0.01, (10.0 * tick,)))
        timeline.add(Reading(t1 + 0.01, (10.0 * (tick + 1),)))
        for rid in live:
            att.add_work(WorkEvent(rid, t0, t1, Phase.DECODE, 5.0))
        finished, live = live[:4], [*live[4:], *(f"r{next_id + i}" for i in range(4))]
        next_id += 4
        for rid in finished:
            att.add_request(RequestInfo(rid, end_s=t1, output_tokens=50))
        start = time.process_time()
        done += len(att.advance(t1 - TICK_S))
        costs.append(time.process_time() - start)
    done += len(att.advance(math.inf))
    return float(np.median(costs)), done


def main() -> None:
    tick_benchmark(
        __doc__,
        300,
        run,
        (ScanAttributor, Attributor),
        (0, 10_000, 20_000),
        ("idle requests", "finalized (both)", "idle"),
        f"{TICK_S * 1000:.0f} ms, a batch of {BATCH} working, 4 finishing per tick",
    )


if __name__ == "__main__":
    main()
