"""The batcher: same-shape batching, n counts items, full queue, cancel while queued, failing batches."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from servers.diffusion.batcher import Batch, Batcher, Job, QueueFull
from servers.diffusion.shapes import JobSpec, Shape

SMALL = Shape("image", "m", 64, 64, 1, 4, 7.5)
LARGE = Shape("image", "m", 128, 128, 1, 4, 7.5)


def spec(shape: Shape = SMALL, n: int = 1, prompt: str = "p") -> JobSpec:
    return JobSpec(shape, prompt, n, seed=1, response_format="b64_json")


class FakePipeline:
    """Records batches; fails a batch holding the prompt 'boom'; can be held open."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()  # a batch is in the pipeline (held there while the gate is shut)

    def __call__(self, batch: Batch) -> list[Any]:
        self.started.set()
        self.gate.wait(5)
        self.batches.append([j.request_id for j in batch.jobs])
        if any(j.spec.prompt == "boom" for j in batch.jobs):
            raise RuntimeError("out of memory (fake)")
        return [f"{j.request_id}/{k}" for j in batch.jobs for k in range(j.spec.n)]


@pytest.fixture
async def running() -> AsyncIterator[tuple[Batcher, FakePipeline, list[Batch]]]:
    pipe = FakePipeline()
    done: list[Batch] = []
    batcher = Batcher(pipe, max_batch_size=4, max_wait_s=0.1, max_queue_items=6, on_batch=done.append)
    task = asyncio.create_task(batcher.run())
    yield batcher, pipe, done
    pipe.gate.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    batcher.close()


def job(rid: str, s: JobSpec) -> Job:
    return Job(rid, s, asyncio.get_running_loop().create_future(), time.monotonic(), time.time_ns())


async def test_same_shape_requests_share_one_call_and_other_shapes_wait_for_their_own(
    running: tuple[Batcher, FakePipeline, list[Batch]],
) -> None:
    batcher, pipe, done = running
    jobs = [job("a", spec()), job("b", spec(LARGE)), job("c", spec()), job("d", spec(n=2))]
    for j in jobs:
        batcher.submit(j)
    results = await asyncio.gather(*(j.future for j in jobs))
    assert pipe.batches == [["a", "c", "d"], ["b"]]
    assert results[3] == ["d/0", "d/1"]  # n=2: two items, in order
    assert [b.items for b in done] == [4, 1]
    assert done[0].member_units() == [64 * 64 * 4, 64 * 64 * 4, 2 * 64 * 64 * 4]
    assert done[0].end_unix_ns >= done[0].start_unix_ns > 0


async def test_a_batch_starts_when_full_without_waiting_for_max_wait(
    running: tuple[Batcher, FakePipeline, list[Batch]],
) -> None:
    batcher, pipe, _ = running
    batcher.max_wait_s = 30.0
    jobs = [job(str(k), spec()) for k in range(4)]
    for j in jobs:
        batcher.submit(j)
    await asyncio.wait_for(asyncio.gather(*(j.future for j in jobs)), 5)
    assert pipe.batches == [["0", "1", "2", "3"]]


async def test_full_queue_refuses_with_a_retry_after_estimate(
    running: tuple[Batcher, FakePipeline, list[Batch]],
) -> None:
    batcher, pipe, _ = running
    pipe.gate.clear()  # hold the first batch so the queue fills
    batcher.submit(job("first", spec(n=4)))
    await asyncio.sleep(0.2)
    batcher.submit(job("q1", spec(n=4)))
    batcher.submit(job("q2", spec(n=2)))
    with pytest.raises(QueueFull) as full:
        batcher.submit(job("q3", spec()))
    assert full.value.retry_after_s >= 1


async def test_a_job_cancelled_while_queued_never_runs_and_one_running_finishes_for_the_others(
    running: tuple[Batcher, FakePipeline, list[Batch]],
) -> None:
    batcher, pipe, _ = running
    pipe.gate.clear()
    first, second = job("first", spec()), job("second", spec(n=4))
    batcher.submit(first)
    for _ in range(500):  # until first is running (held), so second queues behind it
        if pipe.started.is_set():
            break
        await asyncio.sleep(0.01)
    batcher.submit(second)
    assert batcher.cancel(second) is True
    assert batcher.cancel(first) is False
    pipe.gate.set()
    assert await first.future == ["first/0"]
    await asyncio.sleep(0.3)
    assert pipe.batches == [["first"]]
    assert second.future.cancelled()


async def test_an_exception_fails_only_its_batch_and_the_loop_goes_on(
    running: tuple[Batcher, FakePipeline, list[Batch]],
) -> None:
    batcher, _, done = running
    bad, good = job("bad", spec(prompt="boom")), job("good", spec(LARGE))
    batcher.submit(bad)
    batcher.submit(good)
    with pytest.raises(RuntimeError, match="out of memory"):
        await bad.future
    assert await good.future == ["good/0"]
    assert done[0].error is not None and done[1].error is None


async def test_a_request_larger_than_the_batch_size_runs_alone_instead_of_blocking_the_queue(
    running: tuple[Batcher, FakePipeline, list[Batch]],
) -> None:
    batcher, pipe, _ = running
    big, small = job("big", spec(n=6)), job("small", spec())
    batcher.max_queue_items = 16
    batcher.submit(big)
    batcher.submit(small)
    assert len(await big.future) == 6 and await small.future == ["small/0"]
    assert pipe.batches == [["big"], ["small"]]
