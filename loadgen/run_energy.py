"""After a run's last request: read its energy from the sidecar (step 6 of :mod:`loadgen.runner`).

In this order: every request's record (until final, :func:`loadgen.sidecar_client.fetch_records`);
one more scrape, so the idle counter is sealed past every record (the end of the
conservation bracket, :mod:`loadgen.conservation`); the device energy on a regular grid
from the sidecar's own timeline (:func:`loadgen.sidecar_energy.fetch_energy_series`,
better dated than the scrapes); each diffusion phase's timed batches
(:mod:`loadgen.batches`). Without a sidecar nothing is read and every figure stays empty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from loadgen.batches import TimedBatch, measure_batches, timed_batches
from loadgen.conservation import last_end_s
from loadgen.records import Result
from loadgen.sidecar_client import EnergySampler, fetch_records
from loadgen.sidecar_energy import energy_grid, fetch_energy_series, fetch_interval_energy

__all__ = ["RunEnergy", "read_energy"]

TIMELINE = "sidecar timeline (/v1/energy)"
SCRAPES = "scrapes of /metrics"


@dataclass
class RunEnergy:
    """What the sidecar said about a run: device and idle energy over time, timed batches."""

    samples: list[tuple[float, float]] = field(default_factory=list)  # (t_s, J) cumulative device energy
    idle_samples: list[tuple[float, float]] = field(default_factory=list)  # (t_s, J) cumulative idle
    batches: dict[str, list[TimedBatch]] = field(default_factory=dict)  # per diffusion phase
    source: str = SCRAPES
    scrapes: int = 0
    scrape_errors: int | None = None
    note: str = "no sidecar"

    def series_json(self) -> dict[str, Any]:
        """``meta.energy_series``: which series the analysis used, and why not the timeline."""
        return {
            "source": self.source,
            "points": len(self.samples),
            "scrapes": self.scrapes,
            "scrape_errors": self.scrape_errors,
            "idle_points": len(self.idle_samples),
            "note": self.note,
        }


async def read_energy(
    session: aiohttp.ClientSession,
    url: str,
    sampler: EnergySampler | None,
    phases: Sequence[tuple[str, list[Result]]],
    t0_unix_s: float,
    step_s: float,
    wait_s: float,
    label_wait_s: float = math.inf,
) -> RunEnergy:
    """Records into the results, then the run's energy (see the module docstring)."""
    out = RunEnergy()
    if not url:
        return out
    results = [r for _, rs in phases for r in rs]
    await fetch_records(session, url, results, wait_s, label_wait_s=label_wait_s)
    if sampler is not None:
        await sampler.close(session, past_s=last_end_s(results, t0_unix_s))  # idle sealed past every record
        out.samples, out.idle_samples = sampler.samples, sampler.idle_samples
        out.scrapes, out.scrape_errors, out.note = len(sampler.samples), sampler.errors, ""
        if len(sampler.samples) >= 2:
            first_s = min([sampler.samples[0][0], *(t for t, _ in sampler.idle_samples[:1])])
            grid = energy_grid(first_s, sampler.samples[-1][0], step_s)
            series, out.note = await fetch_energy_series(session, url, t0_unix_s, grid, wait_s)
            if series is not None:
                out.samples, out.source = series, TIMELINE
    for name, rs in phases:
        if rs and rs[0].request.unit != "token":
            out.batches[name] = timed_batches(rs)
            await measure_batches(
                out.batches[name], lambda a, b: fetch_interval_energy(session, url, a, b, wait_s)
            )
    return out
