"""An endless simulated GPU: back-to-back simulated runs on one counter.

``jouletrace sidecar --meter sim`` must keep producing energy and work for as
long as it runs (a Prometheus end-to-end test, a Helm demo), so this chains
runs: when one run's simulated time is over, the next (seed + 1) starts where
it ended, on a counter that carries on from the last value. Request ids get
the run's index as a prefix so they never repeat. Times: sidecar clock
seconds; energy: joules.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.meters.base import DeviceInfo, DeviceStatus, EnergySource, Reading
from sidecar.sim.meter import DEVICE_NAME, SimFeeder, sim_status
from sidecar.sim.run import SimConfig, SimRun, simulate

__all__ = ["LoopingSim"]


class _Segment:
    def __init__(self, index: int, run: SimRun, start_s: float, offset_j: float) -> None:
        self.index = index
        self.run = run
        self.start_s = start_s  # clock time of the run's simulated 0
        self.end_s = start_s + run.duration_s
        self.offset_j = offset_j  # counter value carried over from earlier runs
        self.feeder = SimFeeder(run, start_s)


class LoopingSim:
    """Meter (``EnergyMeter``) and work source (``due``) over chained simulated runs."""

    def __init__(
        self,
        config: SimConfig,
        seed: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        t0: float | None = None,
        device_id: str = "GPU-sim-0",
    ) -> None:
        self.config = config
        self.seed = seed
        self._clock = clock
        start = clock() if t0 is None else t0
        self._segments = [_Segment(0, simulate(config, seed), start, 0.0)]
        self._devices = (DeviceInfo(id=device_id, name=DEVICE_NAME, type="gpu"),)
        # read() runs on the poller thread and due() on the event loop: both may extend the chain
        self._lock = threading.RLock()

    # ---- EnergyMeter ------------------------------------------------------------
    @property
    def source(self) -> EnergySource:
        return EnergySource.SIMULATED

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        return self._devices

    def _segment_at(self, t_s: float) -> _Segment:
        with self._lock:
            while t_s >= self._segments[-1].end_s:
                last = self._segments[-1]
                value = last.offset_j + last.run.counter.value_at(last.run.duration_s)
                run = simulate(self.config, self.seed + last.index + 1)
                self._segments.append(_Segment(last.index + 1, run, last.end_s, value))
            # forget runs whose work has all been released (never the current one)
            self._segments = [seg for seg in self._segments[:-1] if not seg.feeder.done] + self._segments[-1:]
            for seg in reversed(self._segments):
                if t_s >= seg.start_s:
                    return seg
            return self._segments[0]

    def read(self) -> Reading:
        """The chained counter now (J)."""
        t = self._clock()
        seg = self._segment_at(t)
        return Reading(t, (seg.offset_j + seg.run.counter.value_at(t - seg.start_s),))

    def status(self) -> tuple[DeviceStatus, ...]:
        t = self._clock()
        seg = self._segment_at(t)
        return (sim_status(seg.run, t - seg.start_s, self._devices[0].id),)

    def close(self) -> None:
        """Nothing to release."""

    # ---- work source ---------------------------------------------------------------
    def due(self, now_s: float) -> tuple[list[WorkEvent], list[RequestInfo]]:
        """Work and finished requests of every live run up to ``now_s``, ids prefixed by run."""
        with self._lock:
            self._segment_at(now_s)
            segments = list(self._segments)
        events: list[WorkEvent] = []
        infos: list[RequestInfo] = []
        for seg in segments:
            ev, inf = seg.feeder.due(now_s)
            prefix = f"r{seg.index}-"
            events += [replace(e, request_id=prefix + e.request_id) for e in ev]
            infos += [replace(i, request_id=prefix + i.request_id) for i in inf]
        return events, infos
