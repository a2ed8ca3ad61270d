"""More reads of the sidecar: energy over an interval, the run's energy series, device names.

- :func:`fetch_interval_energy`: ``GET /v1/energy?start_unix_s=&end_unix_s=`` (the sidecar's
  timeline between two Unix times, J), polled until the sidecar's counter has passed the
  interval's end (``covered``) or a bounded wait runs out. Used to time each diffusion
  batch as the study does.
- :func:`fetch_energy_series`: the cumulative energy on a regular grid of run times, read
  after the run from the sidecar's timeline (one :func:`fetch_interval_energy` per point).
  The ``/metrics`` scrapes taken during the run are dated by the loadgen's clock when the
  answer arrives; on a loaded machine the loadgen is starved for seconds, a scrape is then
  misdated by up to its round trip and none is taken meanwhile (gaps of 7 s were seen),
  so the counter at a window edge, interpolated between them, is off by ~1-2 % of the
  window's energy. The timeline dates every counter update on the sidecar's poll
  (``--poll-interval-s``, 20 ms by default), whatever the loadgen's own delays.
- :func:`fetch_device_names`: the ``hw_name`` labels of ``hw_energy_joules_total`` on
  ``/metrics`` (e.g. ``NVIDIA H100 80GB HBM3``), to match the study's figures by GPU.
"""

from __future__ import annotations

import asyncio
import math
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from loadgen.bounded import gather_bounded
from loadgen.records import finite_j

__all__ = [
    "device_names",
    "energy_grid",
    "fetch_device_names",
    "fetch_energy_series",
    "fetch_interval_energy",
]

_TIMEOUT = aiohttp.ClientTimeout(total=5)
MAX_SERIES_POINTS = 2000  # a long run's grid is coarsened rather than asking for more points


async def fetch_interval_energy(
    session: aiohttp.ClientSession,
    url: str,
    start_unix_s: float,
    end_unix_s: float,
    wait_s: float = 10.0,
    poll_s: float = 0.25,
) -> tuple[float | None, str]:
    """``(energy_j, note)`` over ``[start_unix_s, end_unix_s]``; ``None`` with the reason when unknown."""
    deadline = time.monotonic() + wait_s
    params = {"start_unix_s": repr(start_unix_s), "end_unix_s": repr(end_unix_s)}
    while True:
        try:
            async with session.get(f"{url}/v1/energy", params=params, timeout=_TIMEOUT) as resp:
                if resp.status == 404:
                    return None, "the sidecar has no /v1/energy (an older sidecar)"
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    return None, f"/v1/energy answered HTTP {resp.status}: {str(body)[:200]}"
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
            return None, f"/v1/energy failed: {type(err).__name__}: {err}"
        energy = finite_j(body.get("energy_j")) if isinstance(body, dict) else None
        if energy is not None and body.get("covered") is True:
            return energy, ""
        if time.monotonic() >= deadline:
            return None, "the sidecar's timeline does not cover the interval"
        await asyncio.sleep(poll_s)


def energy_grid(start_s: float, end_s: float, step_s: float) -> list[float]:
    """Regular times from ``start_s`` to ``end_s`` (both included), at most :data:`MAX_SERIES_POINTS`."""
    if end_s <= start_s:
        return [start_s]
    n = max(1, math.ceil((end_s - start_s) / step_s))
    n = min(n, MAX_SERIES_POINTS - 1)
    return [start_s + (end_s - start_s) * k / n for k in range(n + 1)]


async def fetch_energy_series(
    session: aiohttp.ClientSession,
    url: str,
    t0_unix_s: float,
    times_s: list[float],
    wait_s: float = 10.0,
    parallel: int = 16,
) -> tuple[list[tuple[float, float]] | None, str]:
    """``([(t_s, J since times_s[0])], note)`` from the sidecar's timeline; ``None`` with the reason.

    ``times_s`` are seconds on the run's clock, ``t0_unix_s`` the Unix time of its zero
    (the loadgen and the sidecar share the machine's clock). One point that cannot be
    read fails the series: a partial series would silently mix two clocks.
    """
    if len(times_s) < 2:
        return None, "fewer than two points asked"
    start_unix_s = t0_unix_s + times_s[0]
    got = await gather_bounded(
        lambda t_s: fetch_interval_energy(session, url, start_unix_s, t0_unix_s + t_s, wait_s),
        times_s[1:],
        parallel,
    )
    series = [(times_s[0], 0.0)]
    for t_s, (energy_j, note) in zip(times_s[1:], got, strict=True):
        if energy_j is None:
            return None, note
        series.append((t_s, energy_j))
    return series, ""


def device_names(text: str) -> list[str]:
    """The ``hw_name`` label values of ``hw_energy_joules_total`` in a Prometheus exposition."""
    names: list[str] = []
    for family in text_string_to_metric_families(text):
        if family.name not in ("hw_energy_joules", "hw_energy_joules_total"):
            continue
        for sample in family.samples:
            name = sample.labels.get("hw_name")
            if name and name not in names:
                names.append(name)
    return names


async def fetch_device_names(session: aiohttp.ClientSession, url: str) -> list[str]:
    """:func:`device_names` of the sidecar's ``/metrics``; ``[]`` when it cannot be read."""
    try:
        async with session.get(f"{url}/metrics", timeout=_TIMEOUT) as resp:
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return []
    try:
        return device_names(text)
    except ValueError:
        return []
