"""Wiring: meter -> timeline -> attribution -> exporters, on one asyncio loop.

:class:`Sidecar` owns the parts and exposes the in-process API the taps use
(:meth:`Sidecar.add_work`, :meth:`Sidecar.add_request`); :meth:`Sidecar.run`
drives three periodic jobs and the HTTP server:

* poll (every ``poll_interval_s``, default 20 ms): read the energy counters;
* status (every ``status_interval_s``): power, utilization, clocks, memory;
* tick (every ``tick_interval_s``): pull work from pull-style sources, seal
  ticks up to ``now - settle_s``, hand final records to the histograms and the
  ledger, and publish a new immutable snapshot.

In :meth:`Sidecar.run` the meter is read on its own thread (:mod:`.poller`:
an NVML read can take 3-35 ms) and the tick job drains the readings into the
timeline. Every job is also a plain method (``poll``, ``read_status``,
``tick(now_s)``), so tests drive them with a fake clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sidecar.attribution.engine import Attributor
from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.attribution.records import RequestEnergy, Snapshot
from sidecar.attribution.rules import make_rule
from sidecar.config import SidecarConfig
from sidecar.errors import DeviceLost, MeterError
from sidecar.export.api import Served, make_app, serve
from sidecar.export.metrics import MetricsExporter
from sidecar.export.store import Ledger
from sidecar.meters.base import DeviceStatus, EnergyMeter
from sidecar.poller import Poller
from sidecar.snapshot import build_snapshot
from sidecar.timeline import Timeline

__all__ = ["Service", "Sidecar", "WorkSource"]

log = logging.getLogger(__name__)


class WorkSource(Protocol):
    """A source of work drained at each tick (taps, the simulated GPU's feeder)."""

    def due(self, now_s: float) -> tuple[list[WorkEvent], list[RequestInfo]]:
        """Work events and request infos that have happened by ``now_s``."""
        ...


class Service(Protocol):
    """Something with its own server or thread that runs while the sidecar runs (a tap)."""

    def start(self) -> int: ...

    def stop(self, grace_s: float = 1.0) -> None: ...


class Sidecar:
    """One sidecar: a meter's devices, one attribution domain, exporters."""

    def __init__(
        self,
        config: SidecarConfig,
        meter: EnergyMeter,
        *,
        sources: Sequence[WorkSource] = (),
        services: Sequence[Service] = (),
        clock: Callable[[], float] = time.monotonic,
        ledger: Ledger | None = None,
        on_final: Callable[[list[RequestEnergy]], None] | None = None,
    ) -> None:
        self.config = config
        self.meter = meter
        self.sources = list(sources)
        self.services = list(services)
        self.clock = clock
        self.timeline = Timeline(meter.devices, capacity=config.timeline_capacity)
        self.attributor = Attributor(
            self.timeline,
            make_rule(
                config.split,
                fit_window_ticks=config.fit_window_ticks,
                fit_warmup_ticks=config.fit_warmup_ticks,
            ),
            model=config.model,
            energy_source=meter.source.value,
            max_held_ticks=config.fit_warmup_ticks + 100,
        )
        self.ledger = ledger
        self.on_final = on_final
        self.meter_errors = 0
        self.lost: str | None = None  # why the meter stopped, if it did
        self._status: tuple[DeviceStatus, ...] = ()
        self._poller: Poller | None = None
        self.http_port: int | None = None
        self._recent: OrderedDict[str, RequestEnergy] = OrderedDict()  # finals, when no ledger
        self.api_counts: Counter[str] = Counter()  # HTTP requests refused (bad id, failed lookup)
        self._snapshot = build_snapshot(self, clock())
        self.exporter = MetricsExporter(lambda: self._snapshot)

    # ---- the in-process API the taps use ------------------------------------
    def add_work(self, event: WorkEvent) -> bool:
        """Queue a work event (sidecar monotonic seconds); False if rejected (and counted)."""
        return self.attributor.add_work(event)

    def add_request(self, info: RequestInfo) -> None:
        """Record what is known about a request; ``end_s`` set means it finished."""
        self.attributor.add_request(info)

    # ---- the periodic jobs ----------------------------------------------------
    def poll(self) -> None:
        """Read the energy counters once."""
        if self.lost:
            return
        try:
            self.timeline.add(self.meter.read())
        except DeviceLost as err:
            self.lost = str(err)
            log.error("energy meter lost its device: %s; /readyz now fails", err)
        except MeterError as err:
            self.meter_errors += 1
            log.warning("energy read failed (%s); will retry", err)

    def read_status(self) -> None:
        """Read power, utilization, clocks and memory once."""
        if self.lost:
            return
        try:
            self._status = self.meter.status()
        except DeviceLost as err:
            self.lost = str(err)
            log.error("energy meter lost its device: %s; /readyz now fails", err)
        except MeterError as err:
            self.meter_errors += 1
            log.debug("status read failed: %s", err)

    def tick(self, now_s: float | None = None, *, seal_until_s: float | None = None) -> list[RequestEnergy]:
        """Pull source work, seal ticks up to ``now - settle_s``, publish final records and a snapshot."""
        now = self.clock() if now_s is None else now_s
        self._drain_poller()
        for source in self.sources:
            events, infos = source.due(now)
            for event in events:
                self.attributor.add_work(event)
            for info in infos:
                self.attributor.add_request(info)
        until = now - self.config.settle_s if seal_until_s is None else seal_until_s
        finals = self.attributor.advance(until)
        if finals:
            self.exporter.record(finals)
            if self.ledger is not None:
                self.ledger.put_many(finals)
            else:
                for rec in finals:
                    self._recent[rec.request_id] = rec
                while len(self._recent) > 10_000:
                    self._recent.popitem(last=False)
            if self.on_final is not None:
                self.on_final(finals)
        self._snapshot = build_snapshot(self, now)
        return finals

    def _drain_poller(self) -> None:
        poller = self._poller
        if poller is None:
            return
        while poller.readings:
            self.timeline.add(poller.readings.popleft())
        self._status = poller.status
        self.meter_errors = poller.errors
        self.lost = self.lost or poller.lost

    # ---- what exporters read ---------------------------------------------------
    @property
    def status(self) -> tuple[DeviceStatus, ...]:
        return self._status

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def lookup(self, request_id: str) -> dict[str, Any] | None:
        """A request's record: final from the ledger (or memory), else provisional."""
        if self.ledger is not None:
            stored = self.ledger.get(request_id)
            if stored is not None:
                return stored
        elif request_id in self._recent:
            return self._recent[request_id].to_json()
        live = self.attributor.record(request_id)
        return None if live is None else live.to_json()

    def ready(self) -> tuple[bool, str]:
        """Ready once the counter has been seen to update (so ticks can be sealed)."""
        if self.lost:
            return False, f"meter lost its device: {self.lost}"
        if self.timeline.update_period_s() is None:
            return False, "waiting for the energy counter to update (need 3 updates)"
        return True, f"{self.meter.source.value} energy from {len(self.meter.devices)} device(s)"

    # ---- running -----------------------------------------------------------------
    async def run(self, stop: asyncio.Event, *, serve_http: bool = True) -> None:
        """Run until ``stop`` is set; then seal what can be sealed and close."""
        served: Served | None = None
        if serve_http:
            app = make_app(
                metrics=self.exporter.render, lookup=self.lookup, ready=self.ready, counts=self.api_counts
            )
            served = await serve(app, self.config.host, self.config.port)
            self.http_port = served.port
            log.info("serving /metrics and /v1/requests on %s", served.url)
        self._poller = Poller(
            self.meter, poll_s=self.config.poll_interval_s, status_s=self.config.status_interval_s
        )
        self._poller.start()
        for service in self.services:
            service.start()
        ticker = asyncio.create_task(self._every(self.config.tick_interval_s, self.tick, stop))
        try:
            await stop.wait()
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            self._poller.stop()
            for service in self.services:
                service.stop()
            if served is not None:
                await served.close()

    async def _every(self, period_s: float, job: Callable[[], object], stop: asyncio.Event) -> None:
        next_t = time.monotonic()
        while not stop.is_set():
            try:
                job()
            except Exception:  # a bug in one pass must not stop the sidecar
                log.exception("periodic job %s failed", getattr(job, "__name__", job))
            next_t += period_s
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind: skip missed slots rather than bursting
                next_t = time.monotonic()
                delay = 0
            await asyncio.sleep(delay)

    def close(self) -> None:
        self.exporter.shutdown()
        if self.ledger is not None:
            self.ledger.close()
        self.meter.close()
