"""Two more reads of the sidecar: energy over an interval, and the names of its devices.

- :func:`fetch_interval_energy`: ``GET /v1/energy?start_unix_s=&end_unix_s=`` (the sidecar's
  timeline between two Unix times, J), polled until the sidecar's counter has passed the
  interval's end (``covered``) or a bounded wait runs out. Used to time each diffusion
  batch as the study does.
- :func:`fetch_device_names`: the ``hw_name`` labels of ``hw_energy_joules_total`` on
  ``/metrics`` (e.g. ``NVIDIA H100 80GB HBM3``), to match the study's figures by GPU.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["device_names", "fetch_device_names", "fetch_interval_energy"]

_TIMEOUT = aiohttp.ClientTimeout(total=5)


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
        energy = body.get("energy_j") if isinstance(body, dict) else None
        if isinstance(energy, int | float) and body.get("covered"):
            return float(energy), ""
        if time.monotonic() >= deadline:
            return None, "the sidecar's timeline does not cover the interval"
        await asyncio.sleep(poll_s)


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
