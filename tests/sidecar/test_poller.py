"""The poller reads the meter on its own thread: readings pile up, errors are counted, a lost device stops it.

These tests run the real thread (that is the point), against a small fake
meter, with millisecond periods. Nothing sleeps for a fixed time: each test
waits until a condition holds, for at most 2 s.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from sidecar.errors import DeviceLost, MeterReadError, MeterUnavailable
from sidecar.meters.base import DeviceInfo, DeviceStatus, EnergyMeter, EnergySource, Reading
from sidecar.poller import Poller

TIMEOUT_S = 2.0


def wait_until(condition: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.001)


class FakeMeter:
    """Counts up 1 J per read; ``fail(n)`` decides what read number ``n`` (from 1) raises, if anything."""

    def __init__(self, fail: Callable[[int], Exception | None] = lambda n: None) -> None:
        self._fail = fail
        self.reads = 0
        self.status_times: list[float] = []
        self.read_threads: set[threading.Thread] = set()
        self.closed = False

    @property
    def source(self) -> EnergySource:
        return EnergySource.SIMULATED

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        return (DeviceInfo(id="GPU-fake", name="fake GPU"),)

    def read(self) -> Reading:
        self.reads += 1
        self.read_threads.add(threading.current_thread())
        error = self._fail(self.reads)
        if error is not None:
            raise error
        return Reading(time.monotonic(), (float(self.reads),))

    def status(self) -> tuple[DeviceStatus, ...]:
        self.status_times.append(time.monotonic())
        return (DeviceStatus(device_id="GPU-fake", power_w=100.0 + len(self.status_times)),)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def start() -> Iterator[Callable[..., Poller]]:
    """Start a poller on a meter; every poller is stopped at the end even if the test failed."""
    pollers: list[Poller] = []

    def make(meter: FakeMeter, *, poll_s: float = 0.001, status_s: float = 10.0) -> Poller:
        poller = Poller(meter, poll_s=poll_s, status_s=status_s, seed=0)
        pollers.append(poller)
        poller.start()
        return poller

    yield make
    for poller in pollers:
        poller.stop()


def test_the_fake_meter_is_an_energy_meter() -> None:
    assert isinstance(FakeMeter(), EnergyMeter)


def test_the_thread_fills_readings_in_order(start: Callable[..., Poller]) -> None:
    meter = FakeMeter()
    poller = start(meter)
    wait_until(lambda: len(poller.readings) >= 20)
    readings = list(poller.readings)
    energies = [r.energy_j[0] for r in readings]
    assert energies == sorted(energies) and energies[0] == 1.0
    assert all(a.t_s <= b.t_s for a, b in itertools.pairwise(readings))
    assert threading.main_thread() not in meter.read_threads  # read on the poller's thread, not ours


def test_status_is_read_at_most_every_status_interval(start: Callable[..., Poller]) -> None:
    meter = FakeMeter()
    poller = start(meter, poll_s=0.001, status_s=0.05)
    wait_until(lambda: len(meter.status_times) >= 4)
    assert poller.status and poller.status[0].device_id == "GPU-fake"
    poller.stop()
    gaps = [b - a for a, b in itertools.pairwise(meter.status_times)]
    assert min(gaps) >= 0.05 - 0.002  # a poll's read takes a moment before its status read
    assert meter.reads > 2 * len(meter.status_times)  # energy is read far more often than status


def test_a_read_error_is_counted_and_polling_goes_on(start: Callable[..., Poller]) -> None:
    meter = FakeMeter(fail=lambda n: MeterReadError("busy") if n % 3 == 0 else None)
    poller = start(meter)
    wait_until(lambda: poller.errors >= 5 and len(poller.readings) >= 10)
    assert poller.lost is None
    poller.stop()
    assert poller.errors == meter.reads // 3
    assert len(poller.readings) == meter.reads - poller.errors


def test_any_other_meter_error_is_counted_like_a_read_error(start: Callable[..., Poller]) -> None:
    meter = FakeMeter(fail=lambda n: MeterUnavailable("library went away") if n == 2 else None)
    poller = start(meter)
    wait_until(lambda: poller.errors == 1 and len(poller.readings) >= 5)
    assert poller.lost is None


def test_a_lost_device_stops_the_thread_and_records_why(start: Callable[..., Poller]) -> None:
    meter = FakeMeter(fail=lambda n: DeviceLost("GPU-fake fell off the bus") if n >= 4 else None)
    poller = start(meter)
    wait_until(lambda: poller.lost is not None)
    assert poller.lost == "GPU-fake fell off the bus"
    (thread,) = meter.read_threads
    thread.join(TIMEOUT_S)
    assert not thread.is_alive()
    assert meter.reads == 4  # no read after the one that found the device gone
    assert len(poller.readings) == 3
    assert poller.errors == 0
    poller.stop()  # stopping a poller that already ended is fine


def test_stop_joins_the_thread_and_reading_stops(start: Callable[..., Poller]) -> None:
    meter = FakeMeter()
    poller = start(meter, poll_s=0.01)
    wait_until(lambda: meter.reads >= 3)
    began = time.monotonic()
    poller.stop()
    assert time.monotonic() - began < 1.0  # the wait between polls is interruptible
    (thread,) = meter.read_threads
    assert not thread.is_alive()  # joined: no read can follow
    assert not meter.closed  # the poller does not own the meter


class GridFakeMeter(FakeMeter):
    """Two devices whose counters step every 20 ms (real time) on their own phases; read one at a time."""

    fixed_grid = True

    def __init__(self) -> None:
        super().__init__()
        self.t0 = time.monotonic()

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        return (DeviceInfo(id="GPU-a", name="fake GPU"), DeviceInfo(id="GPU-b", name="fake GPU"))

    def read_device(self, index: int) -> float:
        self.reads += 1
        self.read_threads.add(threading.current_thread())
        return float(int((time.monotonic() - self.t0 - 0.007 * index) / 0.02))


def test_the_phase_locked_thread_reads_as_due_and_fills_readings_in_time_order() -> None:
    meter = GridFakeMeter()
    poller = Poller(meter, poll_s=0.004, status_s=10.0, seed=0, phase_lock=True)
    assert poller.phased is not None and poller.phase == ((False, None), (False, None))
    poller.start()
    try:
        wait_until(lambda: len(poller.readings) >= 40)
    finally:
        poller.stop()
    readings = list(poller.readings)
    assert all(a.t_s < b.t_s for a, b in itertools.pairwise(readings))
    for i in range(2):
        values = [r.energy_j[i] for r in readings]
        assert values == sorted(values)
    assert threading.main_thread() not in meter.read_threads
    elapsed_s = time.monotonic() - meter.t0
    assert meter.reads < 2 * elapsed_s / 0.004 * 1.5  # waits between reads: not a busy loop


def test_a_meter_without_a_fixed_grid_keeps_the_fixed_period() -> None:
    assert Poller(FakeMeter(), poll_s=0.02, status_s=1.0, phase_lock=True).phased is None


class ScheduledFakeMeter(FakeMeter):
    """Says its reading changes only every 30 ms (a replayed trace's rows)."""

    def next_change_s(self) -> float:
        return self.read_times[-1] + 0.03 if self.read_times else -math.inf

    def read(self) -> Reading:
        self.read_times.append(time.monotonic())
        return super().read()

    def __init__(self) -> None:
        super().__init__()
        self.read_times: list[float] = []


def test_a_meter_that_says_when_it_changes_is_not_read_before_then(start: Callable[..., Poller]) -> None:
    meter = ScheduledFakeMeter()
    start(meter, poll_s=0.001, status_s=10.0)
    wait_until(lambda: meter.reads >= 4)
    gaps = [b - a for a, b in itertools.pairwise(meter.read_times)]
    assert min(gaps) >= 0.03 - 0.001  # not every 1 ms poll: only once the reading can have changed


class _OversleepingStop(threading.Event):
    """A stop event whose timed waits return ``extra_s`` late, as a thread kept off its core would."""

    def __init__(self, extra_s: float) -> None:
        super().__init__()
        self.extra_s = extra_s

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None and not self.is_set():
            time.sleep(timeout + self.extra_s)
        return self.is_set()


def test_reads_that_run_well_after_they_were_due_are_counted_late() -> None:
    poller = Poller(FakeMeter(), poll_s=0.01, status_s=10.0, seed=0)
    poller._stop = _OversleepingStop(extra_s=0.05)  # 5 poll periods late, every time
    poller.start()
    try:
        wait_until(lambda: poller.late_reads >= 2)
        assert poller.late_reads <= len(poller.readings)  # one per read at most
    finally:
        poller.stop()


def test_reads_on_time_are_not_counted_late(start: Callable[..., Poller]) -> None:
    poller = start(FakeMeter(), poll_s=0.05)  # late: 150 ms after due, even on a loaded machine
    wait_until(lambda: len(poller.readings) >= 5)
    assert poller.late_reads == 0
