"""Wiring: meter -> timeline -> attribution -> exporters, on one asyncio loop.

:class:`Sidecar` owns the parts and exposes the in-process API the taps use
(:meth:`Sidecar.add_work`, :meth:`Sidecar.add_request`); :meth:`Sidecar.run`
drives three periodic jobs and the HTTP server:

* poll (every ``poll_interval_s``, default 20 ms): read the energy counters;
* status (every ``status_interval_s``): power, utilization, clocks, memory;
* tick (every ``tick_interval_s``): drain the taps in their order, seal
  ticks up to ``now - settle_s``, hand final records to the ledger and the
  histograms (:data:`FINAL_BATCH` at a time), and mark the published snapshot
  out of date. The immutable snapshot
  the exporters read is built on the first read after a tick (as of that
  tick's time), so a tick nobody reads (most of them: Prometheus scrapes every
  few seconds) builds none; a lock keeps a read on another thread (the proxy's
  prices) from seeing a tick half done.

The meter is read on its own thread (:mod:`.poller`: an NVML read can take
3-35 ms) and the tick job drains the readings into the timeline. Tests drive
the same code by hand on a fake clock (``sidecar.poller.read_once()``, then
``tick(now_s)``) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from sidecar import malloc_tune
from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.attribution.floor import FloorEstimate
from sidecar.attribution.record_batch import RecordBatch
from sidecar.attribution.records import RequestEnergy, Snapshot
from sidecar.attributor_knobs import build_attributor
from sidecar.config import SidecarConfig
from sidecar.errors import StartupError
from sidecar.export.api import Served, make_app, serve, timeline_energy
from sidecar.export.floor_state import FloorKeeper
from sidecar.export.metrics import MetricsExporter
from sidecar.export.metrics_cache import RenderCache
from sidecar.export.store import RETRY_EVERY_S, Ledger
from sidecar.listen import cannot_listen, start_tap
from sidecar.meters.base import DeviceStatus, EnergyMeter
from sidecar.periodic import run_every
from sidecar.poller import Poller
from sidecar.proxy.prices import price_json
from sidecar.shutdown import resume_provisional, seal_stop
from sidecar.snapshot import build_snapshot
from sidecar.taps.tap import Cuts, Tap, due_isolated, seal_until
from sidecar.timeline import Timeline

__all__ = ["Sidecar"]

log = logging.getLogger(__name__)

# Final records built at most this many at a time (the rest of a burst due in one tick follows in
# batches, each handed to the ledger and the histograms first): a record is small objects until
# written, and a span flood's first seal built a whole burst's at once, whose arenas stayed in the
# RSS after it (docs/deploy.md, "Memory").
FINAL_BATCH = 1024
_IN_MEMORY_RECORDS = 10_000  # final records kept for lookups when no ledger file is configured
_FAILING_TICKS = 3  # consecutive failed tick runs that make /readyz unready
# ledger writes failing this long in a row (s) make /readyz unready (its records pile up in memory, the
# oldest beyond max_pending dropped): ten tries at least (records kept back are tried again every
# RETRY_EVERY_S, each after a 0.5 s wait for a lock), past a transient lock (a backup, a checkpoint)
_FAILING_LEDGER_S = 10 * RETRY_EVERY_S


class Sidecar:
    """One sidecar: a meter's devices, one attribution domain, exporters."""

    def __init__(
        self,
        config: SidecarConfig,
        meter: EnergyMeter,
        *,
        taps: Sequence[Tap] = (),
        clock: Callable[[], float] = time.monotonic,
        ledger: Ledger | None = None,
        on_final: Callable[[Sequence[RequestEnergy]], None] | None = None,
        on_tasks: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        self.config = config
        self.meter = meter
        self.taps = tuple(taps)  # drained in this order at each tick
        self._cuts = tuple(tap for tap in self.taps if isinstance(tap, Cuts))  # cut first, each tick
        self.clock = clock
        self.timeline = Timeline(meter.devices, capacity=config.timeline_capacity)
        # finals, for lookups: the configured ledger, else the most recent ones in memory
        self.ledger = ledger if ledger is not None else Ledger(":memory:", max_rows=_IN_MEMORY_RECORDS)
        floor = FloorEstimate(
            ",".join(d.id for d in meter.devices),
            override_w=config.floor_w or None,
            stale_after_s=config.floor_stale_s,
        )
        self.floor_keeper = FloorKeeper(floor, self.ledger)  # the idle floor across restarts
        self.floor_keeper.restore(clock())
        self.attributor = build_attributor(config, self.timeline, floor, meter.source.value)
        self.on_final = on_final
        self.on_tasks = on_tasks  # late task labels (id -> task) for records already final
        # the id a record goes by for an id a client may hold instead (vLLM's own: chatcmpl-<id>)
        self.record_id: Callable[[str], str] = str
        self.meter_errors = 0
        self.lost: str | None = None  # why the meter stopped, if it did
        self._status: tuple[DeviceStatus, ...] = ()
        self.poller = Poller(
            meter,
            poll_s=config.poll_interval_s,
            status_s=config.status_interval_s,
            clock=clock,
            phase_lock=config.poll_schedule == "phase-lock",
        )
        self.http_port: int | None = None
        self.tick_failures = 0  # tick runs that raised, ever
        self.tick_failing = 0  # consecutive ones, up to the last run
        self.tap_failures: Counter[str] = Counter()  # taps whose due raised, by tap:<class>
        self.holds_released = 0  # ticks that sealed past a tap's hold: too much work was waiting
        self._trim = malloc_tune.PeriodicTrim(malloc_tune.TRIM_EVERY_S, clock())  # freed heap back
        self.resumed = resume_provisional(self)  # requests a stopped sidecar left open
        self.api_counts: Counter[str] = Counter()  # HTTP requests refused (bad id, failed lookup)
        self._state_lock = threading.RLock()  # a tick, or a snapshot being built from the parts
        self.exporter = MetricsExporter(  # reads snapshots only when scraped; one counts in them
            self.snapshot,
            tenant_top_n=config.tenant_top_n,
            max_model_labels=config.max_model_labels,
            model=config.model,
        )
        self._snapshot = build_snapshot(self, clock())
        self._snapshot_due: float | None = None  # a tick's time the published snapshot is behind

    # ---- the in-process API the taps use ------------------------------------
    def add_work(self, event: WorkEvent) -> bool:
        """Queue a work event (sidecar monotonic seconds); False if rejected (and counted)."""
        return self.attributor.add_work(event)

    def add_request(self, info: RequestInfo) -> None:
        """Record what is known about a request; ``end_s`` set means it finished."""
        self.attributor.add_request(info)

    # ---- the periodic job -------------------------------------------------------
    def _seal_until(self, now_s: float) -> float:
        """:func:`seal_until`, no hold kept once half ``max_pending_rows`` wait (``holds_released``)."""
        high = 2 * self.attributor.backlog_rows() >= self.config.max_pending_rows
        until, released = seal_until(self.taps, now_s, self.config.settle_s, backlog_high=high)
        self.holds_released += released
        doubt = self.timeline.doubt_hold_s(now_s)  # a device's bad reads: its energy meanwhile to come
        return until if doubt is None or high else min(until, doubt)

    def tick(self, now_s: float | None = None, *, seal_until_s: float | None = None) -> int:
        """Pull source work, seal ticks up to ``now - settle_s``, publish final records (how many were
        written and published: a record whose id the ledger holds already is kept out); snapshot on
        read."""
        with self._state_lock:
            return self._tick(now_s, seal_until_s)

    def _tick(self, now_s: float | None, seal_until_s: float | None) -> int:
        now = self.clock() if now_s is None else now_s
        self._snapshot_due = now  # from here on the parts move on: the next read builds a snapshot
        self._drain_poller()
        for cutter in self._cuts:  # first every cut, so no tap hands on what came after an earlier drain
            cutter.cut()
        for tap in self.taps:
            events, infos = due_isolated(tap, now, self.tap_failures)
            self.attributor.ingest(events, infos)
        until, stop = (seal_until_s, True) if seal_until_s is not None else (self._seal_until(now), False)
        batch = self.attributor.advance(until, FINAL_BATCH)
        published = self._publish(batch, now, stop)
        while batch and self.attributor.finals_left:  # more final in a burst: the next batch, now
            batch = self.attributor.advance(until, FINAL_BATCH)  # seals nothing more
            published += self._publish(batch, now, stop)
        late = self.attributor.take_late_tasks()  # tasks named after final: the stored records take them
        if late:
            self.attributor.count_late_tasks(self.ledger.set_tasks(late))
            if self.on_tasks is not None:
                self.on_tasks(late)
        self.floor_keeper.save(now)
        self.ledger.expire()  # by age, also when nothing was written for a while
        return published

    def _publish(self, records: RecordBatch, now_s: float, stop: bool) -> int:
        """Final records to the ledger, written together with those waiting when due
        (``ledger_write_every_s``), and what was written to the histograms and ``on_final``; what is
        written is counted: a request final already (a restart) is kept out, counted once."""
        finals = self.ledger.put_new(records, now_s=now_s, force=stop)
        if finals:
            self.exporter.record(finals)
            if self.on_final is not None:
                self.on_final(finals)
        else:  # records a failed write kept back: written with no batch to carry them (the stop: now)
            self.ledger.flush(force=stop)
        return len(finals)

    def _drain_poller(self) -> None:
        poller = self.poller
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
        """The parts as of the last tick (built now if a tick ran since the last build; any thread)."""
        with self._state_lock:
            if self._snapshot_due is not None:
                self._snapshot = build_snapshot(self, self._snapshot_due)
                self._snapshot_due = None
            return self._snapshot

    def prices(self) -> dict[str, Any]:
        """The proxy process's price sheet (``GET /v1/prices``), from the last tick's snapshot."""
        return price_json(self.snapshot(), self.attributor.rule)

    def lookup(self, request_id: str) -> dict[str, Any] | None:
        """A request's record: final from the ledger, else provisional; by the id given, else by the
        id its record goes by (:attr:`record_id`: the response's ``id`` vLLM answered with)."""
        found = self._lookup(request_id)
        if found is None and (alias := self.record_id(request_id)) != request_id:
            found = self._lookup(alias)
        return found

    def _lookup(self, request_id: str) -> dict[str, Any] | None:
        stored = self.ledger.get(request_id)
        if stored is not None:
            return stored
        live = self.attributor.record(request_id)
        return None if live is None else live.to_json()

    def ready(self) -> tuple[bool, str]:
        """Ready once the counter has been seen to update (so ticks can be sealed); not while the
        device is lost, the tick job or the ledger's writes keep failing."""
        if self.lost:
            return False, f"meter lost its device: {self.lost}"
        if self.tick_failing >= _FAILING_TICKS:
            return False, f"the tick job failed {self.tick_failing} times in a row (see the log)"
        if (failing_s := self.ledger.failing_s()) >= _FAILING_LEDGER_S:
            return False, f"ledger writes failed for {failing_s:.0f} s in a row (see the log)"
        if self.timeline.update_period_s() is None:
            return False, "waiting for the energy counter to update (need 3 updates)"
        return True, f"{self.meter.source.value} energy from {len(self.meter.devices)} device(s)"

    # ---- running -----------------------------------------------------------------
    async def run(self, stop: asyncio.Event, *, serve_http: bool = True) -> None:
        """Start HTTP, the poller and the taps; run until ``stop`` is set; stop them all.

        A part that cannot start (its port in use) raises :class:`StartupError` naming
        its knob, after everything that did start has been stopped again.
        """
        served: Served | None = None
        ticker: asyncio.Task[None] | None = None
        try:
            if serve_http:
                served = await self._serve_http()
            self.poller.start()
            for tap in self.taps:
                start_tap(tap, self.config)
            ticker = asyncio.create_task(run_every(self.config.tick_interval_s, self._tick_job, stop))
            await stop.wait()
        finally:
            if ticker is not None:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
            await asyncio.to_thread(self.shutdown)
            if served is not None:
                await served.close()

    def _tick_job(self) -> None:
        try:
            self.tick()
        except Exception:
            self.tick_failures += 1
            self.tick_failing += 1
            raise
        self.tick_failing = 0
        self._trim(self.clock())

    def shutdown(self) -> None:
        """Stop the taps and the poller, seal what they left and store it; within ``shutdown_grace_s``."""
        seal_stop(self, self.config.shutdown_grace_s)

    async def _serve_http(self) -> Served:
        app = make_app(
            metrics=RenderCache(self.exporter.render, self.snapshot),
            lookup=self.lookup,
            ready=self.ready,
            energy=timeline_energy(self.timeline, clock=self.clock),
            counts=self.api_counts,
            prices=self.prices,
        )
        try:
            served = await serve(app, self.config.host, self.config.port)
        except OSError as err:
            raise StartupError(cannot_listen(self.config, "port", err)) from err
        self.http_port = served.port
        log.info(
            "serving /metrics, /v1/requests, /v1/energy, /v1/prices, /healthz and /readyz on %s", served.url
        )
        return served

    def close(self) -> None:
        self.exporter.shutdown()
        self.ledger.close()
        self.meter.close()
