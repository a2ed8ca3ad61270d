"""Work events per second through attribution, on one core.

A synthetic continuous batch: 64 requests in flight, one engine step every
20 ms, one work event per member per step (as the vLLM plugin tap delivers),
a request finishing and a new one starting every few steps; an NVML-like
counter updating every 100 ms, polled every 20 ms. Events are created up
front (not timed); the timed path is what the live sidecar does per event and
per tick: ``add_work`` for each event, ``add_request`` at each finish, timeline
polls, and ``advance`` every 100 ms of event time.

Baseline in the same process: the same events appended to a list (the floor
for any per-event Python work). Ends with one line ``events/s N``.

    .venv/bin/python benchmarks/ingest.py [--events 600000]
"""

from __future__ import annotations

import argparse
import time

from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import Phase, RequestInfo, WorkEvent
from sidecar.attribution.rules import make_rule
from sidecar.meters.base import DeviceInfo, Reading
from sidecar.timeline import Timeline

STEP_S = 0.02
BATCH = 64


def workload(n_events: int) -> tuple[list[list[WorkEvent]], list[list[RequestInfo]]]:
    """Events and finished requests per 100 ms tick."""
    ticks_ev: list[list[WorkEvent]] = []
    ticks_fin: list[list[RequestInfo]] = []
    live = [(f"r{i}", 0) for i in range(BATCH)]
    next_id = BATCH
    made = 0
    step = 0
    while made < n_events:
        t0 = step * STEP_S
        if step % 5 == 0:
            ticks_ev.append([])
            ticks_fin.append([])
        for k, (rid, age) in enumerate(live):
            phase = Phase.PREFILL if age == 0 else Phase.DECODE
            units = 256.0 if age == 0 else 1.0
            ticks_ev[-1].append(WorkEvent(rid, t0, t0 + STEP_S * 0.9, phase, units, 1.0, 300.0 + age))
            live[k] = (rid, age + 1)
        made += len(live)
        for k in range(len(live)):
            rid, age = live[k]
            if age >= 40 + (hash(rid) % 200):
                ticks_fin[-1].append(RequestInfo(rid, end_s=t0 + STEP_S, output_tokens=age))
                live[k] = (f"r{next_id}", 0)
                next_id += 1
        step += 1
    return ticks_ev, ticks_fin


def run_attribution(ticks_ev: list[list[WorkEvent]], ticks_fin: list[list[RequestInfo]]) -> float:
    timeline = Timeline([DeviceInfo("GPU-bench", "bench")])
    att = Attributor(timeline, make_rule("fitted"), unix_offset=lambda: 0.0)
    energy = 0.0
    poll_t = 0.0
    start = time.perf_counter()
    for k, (events, finished) in enumerate(zip(ticks_ev, ticks_fin, strict=True)):
        t_end = (k + 1) * 5 * STEP_S
        for event in events:
            att.add_work(event)
        for info in finished:
            att.add_request(info)
        while poll_t < t_end:  # five 20 ms polls per tick; the counter moves once per 100 ms
            poll_t += STEP_S
            if abs(poll_t / 0.1 - round(poll_t / 0.1)) < 1e-9:
                energy += 45.0 + (k % 7)
            timeline.add(Reading(poll_t, (energy,)))
        att.advance(t_end - 0.3)
    att.advance(float("inf"))
    return time.perf_counter() - start


def run_baseline(ticks_ev: list[list[WorkEvent]]) -> float:
    sink: list[WorkEvent] = []
    start = time.perf_counter()
    for events in ticks_ev:
        for event in events:
            sink.append(event)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=600_000)
    args = parser.parse_args()
    ticks_ev, ticks_fin = workload(args.events)
    n = sum(len(t) for t in ticks_ev)
    base_s = run_baseline(ticks_ev)
    attr_s = min(run_attribution(ticks_ev, ticks_fin) for _ in range(2))
    print(
        f"{n} events, {len(ticks_ev)} ticks of 100 ms, batch {BATCH}, "
        f"{sum(map(len, ticks_fin))} requests finished"
    )
    print(f"baseline (append to a list): {n / base_s:12,.0f} events/s")
    print(
        f"attribution (fitted rule):   {n / attr_s:12,.0f} events/s   "
        f"({attr_s / base_s:.0f}x the baseline's time)"
    )
    print(f"events/s {n / attr_s:.0f}")


if __name__ == "__main__":
    main()
