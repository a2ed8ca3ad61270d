"""A meter scripted for the sidecar's fault tests: a 100 ms counter polled every 20 ms of fake time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sidecar.app import Sidecar
from sidecar.errors import MeterError
from sidecar.meters.base import DeviceInfo, DeviceStatus, EnergySource, Reading
from tests.support import FakeClock

POLL_S = 0.02


class ScriptedMeter:
    """Gains 10 J every 5th read (a 100 ms counter polled every 20 ms); ``fail(n)`` may raise on read n."""

    def __init__(
        self,
        clock: FakeClock,
        fail: Callable[[int], MeterError | None] = lambda n: None,
        wrap_j: float | None = None,
        start_j: float = 5000.0,
    ) -> None:
        self._clock = clock
        self._fail = fail
        self.start_j = start_j
        self._wrap_j = wrap_j
        self.reads = 0
        self.status_reads = 0
        self.status_error: MeterError | None = None
        self._devices = (DeviceInfo(id="GPU-fake", name="fake GPU", wrap_j=wrap_j),)
        self._shown: tuple[float, ...] | None = None  # what reads show instead of the counter (showing)

    @property
    def source(self) -> EnergySource:
        return EnergySource.SIMULATED

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        return self._devices

    def read(self) -> Reading:
        self.reads += 1
        error = self._fail(self.reads)
        if error is not None:
            raise error
        if self._shown is not None:
            return Reading(self._clock(), self._shown)
        value = self.start_j + 10.0 * (self.reads // 5)
        if self._wrap_j is not None:
            value %= self._wrap_j
        return Reading(self._clock(), (value,))

    @contextmanager
    def showing(self, value_j: tuple[float, ...]) -> Iterator[None]:
        """While inside, the counter goes on (each read counts) but the reads show ``value_j``: a
        device whose reads are garbage, or whose driver stopped publishing its updates."""
        self._shown = value_j
        try:
            yield
        finally:
            self._shown = None

    def reset_counter(self) -> None:
        """The driver reloads: the next read starts again from 0 J."""
        self.start_j = -10.0 * ((self.reads + 1) // 5)

    def status(self) -> tuple[DeviceStatus, ...]:
        self.status_reads += 1
        if self.status_error is not None:
            raise self.status_error
        return (DeviceStatus(device_id="GPU-fake", power_w=500.0),)

    def close(self) -> None:
        pass


def poll_for(sidecar: Sidecar, clock: FakeClock, seconds: float) -> None:
    """Poll every 20 ms of fake time, then tick once (the tick drains the poller's readings)."""
    for _ in range(round(seconds / POLL_S)):
        clock.t_s += POLL_S
        sidecar.poller.read_once()
    sidecar.tick()
