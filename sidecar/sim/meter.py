"""Stream a :class:`SimRun` into the sidecar on a real or fake clock.

:class:`SimMeter` is an :class:`EnergyMeter` over the run's NVML-like
counter: simulated time 0 is clock time ``t0`` (the clock's value when the
meter is built, unless given), so ``read()`` at clock time ``t`` returns the
counter's value at simulated time ``t - t0``. After the run's end the GPU
idles on at ``idle_w``.

:class:`SimFeeder` is the tap side: ``due(now_s)`` releases the work events
that ended by ``now_s`` and the request records that finished by then, each
exactly once, with times moved onto the clock (``+ t0``). Together they let a
test drive the whole sidecar on a fake clock, or a demo run in real time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.meters.base import DeviceInfo, DeviceStatus, EnergySource, Reading
from sidecar.sim.run import SimRun

__all__ = ["DEVICE_NAME", "SimFeeder", "SimMeter", "sim_status"]

DEVICE_NAME = "simulated H100-class GPU"


class SimMeter:
    """An :class:`~sidecar.meters.base.EnergyMeter` reading a simulated run's counter.

    ``utilization_window_s``: the span over which ``status()`` reports the
    fraction of time a step ran (NVML averages over 1/6 s to 1 s).
    """

    def __init__(
        self,
        run: SimRun,
        clock: Callable[[], float] = time.monotonic,
        t0: float | None = None,
        device_id: str = "GPU-sim-0",
        utilization_window_s: float = 1.0,
    ) -> None:
        self._run = run
        self._clock = clock
        self.t0 = clock() if t0 is None else t0
        wrap = run.config.counter.wrap_j
        self._devices = (DeviceInfo(id=device_id, name=DEVICE_NAME, type="gpu", wrap_j=wrap),)
        self._window_s = utilization_window_s

    @property
    def source(self) -> EnergySource:
        return EnergySource.SIMULATED

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        return self._devices

    def read(self) -> Reading:
        """The counter now (J, 1 mJ steps, updating about every 100 ms)."""
        t = self._clock()
        return Reading(t, (self._run.counter.value_at(t - self.t0),))

    def status(self) -> tuple[DeviceStatus, ...]:
        """Instant power (W), utilization, SM clock, memory and the power cap, simulated."""
        return (sim_status(self._run, self._clock() - self.t0, self._devices[0].id, self._window_s),)

    def close(self) -> None:
        """Nothing to release."""


WEIGHTS_BYTES = 16e9  # an 8B-parameter model in BF16
KV_BYTES = 2e9  # KV cache in use at full utilization (simulated, linear in utilization)
SM_CLOCK_MHZ = 1980.0  # held while a CUDA context is open (measured on an H200: docs/measurements/nvml.md)
SM_CLOCK_CAPPED_MHZ = 1500.0  # at the power cap the clocks drop (1425-1545 MHz measured)


def sim_status(run: SimRun, sim_t: float, device_id: str, window_s: float = 1.0) -> DeviceStatus:
    """The simulated GPU's latent metrics at simulated time ``sim_t`` (s)."""
    trace = run.trace
    power_w = trace.power_at(sim_t)
    utilization = trace.utilization(sim_t, window_s)
    cap_w = run.config.gpu.power_cap_w
    return DeviceStatus(
        device_id=device_id,
        power_w=power_w,
        utilization=utilization,
        sm_clock_mhz=SM_CLOCK_CAPPED_MHZ if power_w >= 0.97 * cap_w else SM_CLOCK_MHZ,
        memory_used_bytes=WEIGHTS_BYTES + KV_BYTES * utilization,
        power_limit_w=cap_w,
    )


class SimFeeder:
    """Releases a run's events and finished requests as the clock passes them."""

    def __init__(self, run: SimRun, t0: float) -> None:
        self.t0 = t0
        self._events = sorted(run.events, key=lambda e: e.t1_s)
        # compared on the clock, as released: t1 + t0 <= now_s, whatever the rounding
        self._event_t1 = np.array([e.t1_s + t0 for e in self._events], dtype=np.float64)
        finished = [r for r in run.requests if r.end_s is not None]
        self._requests = sorted(finished, key=lambda r: r.end_s or 0.0)
        self._request_end = np.array([(r.end_s or 0.0) + t0 for r in self._requests], dtype=np.float64)
        self._next_event = 0
        self._next_request = 0

    @property
    def done(self) -> bool:
        """Whether everything has been released."""
        return self._next_event == len(self._events) and self._next_request == len(self._requests)

    def due(self, now_s: float) -> tuple[list[WorkEvent], list[RequestInfo]]:
        """Events with ``t1 <= now_s`` and requests with ``end <= now_s`` not released before.

        Times are on the clock (sim time + ``t0``); each item is released once.
        """
        e_end = int(np.searchsorted(self._event_t1, now_s, side="right"))
        r_end = int(np.searchsorted(self._request_end, now_s, side="right"))
        t0 = self.t0
        events = [
            WorkEvent(e.request_id, e.t0_s + t0, e.t1_s + t0, e.phase, e.units, e.steps, e.context_tokens)
            for e in self._events[self._next_event : e_end]
        ]
        requests = [_shift(r, t0) for r in self._requests[self._next_request : r_end]]
        self._next_event = max(self._next_event, e_end)
        self._next_request = max(self._next_request, r_end)
        return events, requests


def _shift(r: RequestInfo, t0: float) -> RequestInfo:
    return RequestInfo(
        request_id=r.request_id,
        model=r.model,
        operation=r.operation,
        task=r.task,
        start_s=None if r.start_s is None else r.start_s + t0,
        end_s=None if r.end_s is None else r.end_s + t0,
        prompt_tokens=r.prompt_tokens,
        output_tokens=r.output_tokens,
        output_units=r.output_units,
        unit=r.unit,
        attributes=dict(r.attributes),
    )
