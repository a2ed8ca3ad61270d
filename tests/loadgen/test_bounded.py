"""gather_bounded: results in the items' order, never more than ``parallel`` in flight."""

from __future__ import annotations

import asyncio

from loadgen.bounded import gather_bounded


async def test_results_keep_the_items_order_and_at_most_parallel_run_at_once() -> None:
    running, peak = 0, 0

    async def work(k: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (10 - k))  # later items finish first
        running -= 1
        return k * k

    assert await gather_bounded(work, range(10), 3) == [k * k for k in range(10)]
    assert peak == 3
    assert await gather_bounded(work, [], 3) == []
