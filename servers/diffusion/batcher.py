"""Dynamic batching: a queue, same-shape batches, one pipeline call per batch.

The oldest queued job picks the shape of the next batch; every queued job of
that shape joins it, in arrival order, while the batch has room
(``max_batch_size`` items, a job with ``n`` images counting ``n``). The batch
starts when it is full or when its oldest job has waited ``max_wait_s``.
Batches run one at a time on one worker thread (one accelerator).

Faults: a full queue (``max_queue_items``) refuses new jobs with
:class:`QueueFull` carrying a Retry-After estimate (s); :meth:`Batcher.cancel`
removes a job that is still queued (its client went away) and returns False
once it runs (then the batch finishes for the others); an exception in the
pipeline call fails only that batch's jobs, and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from servers.diffusion.shapes import JobSpec, Shape

__all__ = ["Batch", "Batcher", "Job", "QueueFull"]

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The queue holds ``max_queue_items``; retry after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"queue full; retry after {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class Job:
    """One request in the server: its spec, arrival time and result future."""

    request_id: str
    spec: JobSpec
    future: asyncio.Future[list[Any]]
    arrival_s: float  # monotonic s
    arrival_unix_ns: int
    state: str = "queued"  # queued, running, done, cancelled
    batch: Batch | None = None


@dataclass(eq=False)
class Batch:
    """Jobs that run as one pipeline call; times filled in by the worker thread."""

    batch_id: str
    shape: Shape
    jobs: list[Job]
    start_unix_ns: int = 0
    end_unix_ns: int = 0
    error: BaseException | None = None
    outputs: list[Any] = field(default_factory=list)

    @property
    def items(self) -> int:
        """Images or videos in the batch (the pipeline's batch size)."""
        return sum(j.spec.n for j in self.jobs)

    @property
    def seconds(self) -> float:
        return (self.end_unix_ns - self.start_unix_ns) / 1e9

    def member_units(self) -> list[int]:
        """Work units per job: pixels x frames x steps x its items."""
        return [self.shape.units_per_item * j.spec.n for j in self.jobs]


RunBatch = Callable[[Batch], Sequence[Any]]


class Batcher:
    """Forms batches from a queue and runs them with ``run_batch`` (blocking, on a worker thread).

    ``run_batch(batch)`` returns one output per item, in job order. ``on_start`` is
    called on the worker thread as a pipeline call begins, ``on_batch`` on the event
    loop after every batch, failed or not.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int = 8,
        max_wait_s: float = 0.05,
        max_queue_items: int = 64,
        on_batch: Callable[[Batch], None] | None = None,
        on_start: Callable[[Batch], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue_items = max_queue_items
        self.on_batch = on_batch
        self.on_start = on_start
        self.clock = clock
        self._queue: list[Job] = []
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]
        self.last_item_s = 1.0  # recent seconds per item, for Retry-After
        self.running: Batch | None = None

    @property
    def queued_items(self) -> int:
        return sum(j.spec.n for j in self._queue)

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises :class:`QueueFull` when it does not fit."""
        if self.queued_items + job.spec.n > self.max_queue_items:
            backlog = self.queued_items + (self.running.items if self.running else 0)
            raise QueueFull(max(1.0, math.ceil(backlog * self.last_item_s)))
        self._queue.append(job)
        self._arrived.set()

    def cancel(self, job: Job) -> bool:
        """Remove a queued job (True); False if it already runs or ran."""
        if job.state != "queued":
            return False
        self._queue.remove(job)
        job.state = "cancelled"
        if not job.future.done():
            job.future.cancel()
        return True

    def _pick(self) -> tuple[list[Job], float]:
        """Jobs for the next batch (same shape as the oldest, within size) and the oldest's wait (s)."""
        oldest = self._queue[0]
        picked: list[Job] = []
        items = 0
        for job in self._queue:  # the oldest always goes, even if its n alone exceeds the batch size
            fits = items + job.spec.n <= self.max_batch_size
            if job is oldest or (job.spec.shape == oldest.spec.shape and fits):
                picked.append(job)
                items += job.spec.n
        return picked, self.clock() - oldest.arrival_s

    async def run(self) -> None:
        """Form and run batches until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            picked, waited_s = self._pick()
            items = sum(j.spec.n for j in picked)
            if items < self.max_batch_size and waited_s < self.max_wait_s:
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), self.max_wait_s - waited_s)
                continue
            batch = Batch(f"{self._prefix}-{next(self._ids)}", picked[0].spec.shape, picked)
            for job in picked:
                self._queue.remove(job)
                job.state = "running"
                job.batch = batch
            self.running = batch
            await loop.run_in_executor(self._executor, self._call, batch)
            self.running = None
            self._finish(batch)

    def _call(self, batch: Batch) -> None:
        """Run one pipeline call on the worker thread; never raises."""
        batch.start_unix_ns = time.time_ns()
        if self.on_start is not None:
            try:
                self.on_start(batch)
            except Exception:
                log.exception("on_start failed for batch %s", batch.batch_id)
        try:
            outputs = list(self.run_batch(batch))
            if len(outputs) != batch.items:
                raise RuntimeError(f"pipeline returned {len(outputs)} outputs for {batch.items} items")
            batch.outputs = outputs
        except Exception as err:  # fails this batch only
            batch.error = err
            log.exception("batch %s (%d items) failed", batch.batch_id, batch.items)
        batch.end_unix_ns = time.time_ns()
        if batch.error is None and batch.items:
            self.last_item_s = batch.seconds / batch.items

    def _finish(self, batch: Batch) -> None:
        at = 0
        for job in batch.jobs:
            job.state = "done"
            mine = batch.outputs[at : at + job.spec.n]
            at += job.spec.n
            if job.future.done():
                continue
            if batch.error is not None:
                job.future.set_exception(batch.error)
            else:
                job.future.set_result(mine)
        if self.on_batch is not None:
            try:
                self.on_batch(batch)
            except Exception:
                log.exception("on_batch failed for batch %s", batch.batch_id)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
