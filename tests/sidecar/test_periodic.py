"""The sidecar's periodic job runner: a job that raises is logged and runs again on time."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pytest

from sidecar.periodic import run_every


def test_a_job_that_raises_is_logged_and_the_next_runs_until_stop(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    stop = asyncio.Event()

    def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("a bug in one pass")
        if len(runs) == 3:
            stop.set()

    with caplog.at_level(logging.ERROR, logger="sidecar.periodic"):
        asyncio.run(asyncio.wait_for(run_every(0.001, job, stop), timeout=5))
    assert runs == [0, 1, 2]  # the failed first run did not stop the later ones; stop ended it
    assert [r.message for r in caplog.records] == ["periodic job job failed"]


def test_a_run_that_falls_behind_skips_its_missed_slots_instead_of_bursting() -> None:
    loop_times: list[float] = []
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def job() -> None:
            loop_times.append(loop.time())
            if len(loop_times) == 1:
                time.sleep(0.2)  # twenty periods late
            if len(loop_times) == 4:
                stop.set()

        await run_every(0.01, job, stop)

    asyncio.run(asyncio.wait_for(main(), timeout=5))
    gaps = [b - a for a, b in itertools.pairwise(loop_times[1:])]
    assert all(gap >= 0.008 for gap in gaps)  # after the late run: one period apart, not back to back
