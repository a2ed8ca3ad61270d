"""Reading the sidecar: its device-energy counter over time, and each request's energy record.

- :class:`EnergySampler` scrapes ``GET /metrics`` every ``interval_s`` and keeps
  ``(t_s, energy_j)``: the sum over devices of ``hw_energy_joules_total``
  (cumulative joules), ``t_s`` on the run's clock (seconds from ``t0``, the middle
  of the scrape's round trip). Window energy is the difference of this counter,
  interpolated linearly at the window's edges; power over time is its slope. The
  sidecar's idle energy (its ``idle`` phase) is sampled too, dated to the last
  sealed tick, so the analysis can show what attribution kept as idle in a window.
- :func:`fetch_records` polls ``GET /v1/requests/{id}`` for every finished request
  until the record is ``final`` or a bounded wait runs out. The ids tried: the
  ``X-Request-Id`` the client sent, the same with ``-0`` (vLLM names a completions
  request ``cmpl-<id>-<prompt index>`` and the sidecar strips only the prefix), then
  the server's response id.

The exposition is read with ``prometheus_client.parser`` (the reference parser); a
scrape it cannot parse counts as a failed sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from loadgen.bounded import gather_bounded
from loadgen.errors import UnreachableError
from loadgen.records import Result

__all__ = ["ENERGY_METRIC", "EnergySampler", "fetch_records", "parse_energy", "parse_idle", "probe_sidecar"]

ENERGY_METRIC = "hw_energy_joules_total"
IDLE_METRIC = "gen_ai_server_energy_joules_total"
LAG_METRIC = "jouletrace_attribution_lag_seconds"


def _sum_samples(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """Sum of the samples called ``name`` with ``labels``; ``None`` if none, if the text does not
    parse, or if the sum is not a finite number >= 0 (energies, a lag: NaN is no sample)."""
    total, seen = 0.0, False
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    total += sample.value
                    seen = True
    except ValueError:  # the reference parser's error for a malformed exposition
        return None
    return total if seen and 0.0 <= total < math.inf else None


def parse_idle(text: str) -> tuple[float, float] | None:
    """(idle J attributed so far, attribution lag s) from the sidecar's exposition, ``None`` if absent.

    Idle energy (``gen_ai_server_energy_joules_total{jouletrace_phase="idle"}``) is known only
    up to the last sealed tick, ``jouletrace_attribution_lag_seconds`` behind the counter.
    """
    idle = _sum_samples(text, IDLE_METRIC, {"jouletrace_phase": "idle"})
    lag = _sum_samples(text, LAG_METRIC)
    return (idle, lag) if idle is not None and lag is not None else None


def parse_energy(text: str) -> float | None:
    """Sum of every ``hw_energy_joules_total`` sample in a Prometheus exposition (J), ``None`` if absent."""
    return _sum_samples(text, ENERGY_METRIC)


async def probe_sidecar(session: aiohttp.ClientSession, url: str) -> None:
    """``GET {url}/healthz`` and one ``/metrics`` read; raise :class:`UnreachableError` naming the URL."""
    try:
        async with session.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            if resp.status != 200:
                raise UnreachableError(
                    f"sidecar at {url} answered /healthz with HTTP {resp.status} (--sidecar-url)"
                )
        async with session.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        raise UnreachableError(
            f"cannot reach the sidecar at {url} ({type(err).__name__}: {err}); start it "
            "(`jouletrace sidecar`) or pass --sidecar-url '' to run without energy"
        ) from err
    if parse_energy(text) is None:
        raise UnreachableError(f"the sidecar at {url} exports no {ENERGY_METRIC} yet (is its meter running?)")


@dataclass
class EnergySampler:
    """Samples the sidecar's cumulative device energy while a run goes on."""

    url: str
    t0: float
    interval_s: float = 0.2
    samples: list[tuple[float, float]] = field(default_factory=list)  # (t_s from t0, J)
    idle_samples: list[tuple[float, float]] = field(default_factory=list)  # (sealed t_s from t0, idle J)
    errors: int = 0

    async def sample_once(self, session: aiohttp.ClientSession, timeout_s: float = 2.0) -> bool:
        """One scrape; failures are counted, never raised. ``True`` when it gave a sample."""
        before, timeout = time.perf_counter(), aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with session.get(f"{self.url}/metrics", timeout=timeout) as resp:
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError, OSError):
            self.errors += 1
            return False
        after = time.perf_counter()
        energy = parse_energy(text)
        if energy is None:
            self.errors += 1
            return False
        t_s = (before + after) / 2 - self.t0
        self.samples.append((t_s, energy))
        idle = parse_idle(text)
        if idle is not None and (not self.idle_samples or t_s - idle[1] > self.idle_samples[-1][0]):
            self.idle_samples.append((t_s - idle[1], idle[0]))
        return True

    async def close(
        self,
        session: aiohttp.ClientSession,
        attempts: int = 5,
        past_s: float | None = None,
        wait_s: float = 10.0,
    ) -> bool:
        """The closing scrape, which ends the idle series past every final record.

        A loaded machine can answer /metrics slowly (the engine holds the cores): this one
        waits longer and a failed one is tried again (``attempts`` failures in all), since
        without it the idle figure of the run's last window is unknown. With ``past_s`` (the
        last record's end, on this sampler's clock) it also scrapes again, for up to
        ``wait_s``, while the page's idle reading is dated before that: a page is a snapshot
        of up to one tick before, or more where rendering it is dear
        (:mod:`sidecar.export.metrics_cache`). ``True`` once a scrape gave such a reading.
        """
        deadline, failures = time.monotonic() + wait_s, 0
        while failures < attempts:
            if not await self.sample_once(session, timeout_s=10.0):
                failures += 1
                continue
            if past_s is None or (self.idle_samples and self.idle_samples[-1][0] >= past_s):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(self.interval_s)
        return False

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        """Sample until ``stop`` is set, then once more."""
        while not stop.is_set():
            await self.sample_once(session)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
        await self.sample_once(session)


async def _fetch_one(
    session: aiohttp.ClientSession,
    url: str,
    result: Result,
    deadline: float,
    poll_s: float,
    label_wait_s: float,
) -> None:
    rid0 = result.request.id
    ids = [rid0, f"{rid0}-0"]  # vLLM's completions id is cmpl-<X-Request-Id>-<prompt index>
    if result.response_id and result.response_id not in ids:
        ids.append(result.response_id)
    last: dict[str, object] | None = None
    label_by: float | None = None  # a final record may still get its task from our client span
    while True:
        for rid in ids:
            try:
                async with session.get(
                    f"{url}/v1/requests/{rid}", timeout=aiohttp.ClientTimeout(total=5)
                ) as resp:
                    doc = await resp.json(content_type=None) if resp.status == 200 else None
                    if isinstance(doc, dict):  # a record; anything else is a failed read
                        last = doc
                        ids = [rid]
                        break
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                continue
        if last is not None and last.get("final"):
            label_by = label_by or time.monotonic() + label_wait_s
            unlabelled = last.get("task") == "unknown" and result.request.task != "unknown"
            if not unlabelled or time.monotonic() >= min(label_by, deadline):
                result.energy = dict(last)
                return
        if time.monotonic() >= deadline:
            if last is None:
                result.energy_note = "no record: the sidecar did not attribute this request (no tap saw it)"
            else:
                result.energy = dict(last)
                result.energy_note = "record not final when the wait ran out"
            return
        await asyncio.sleep(poll_s)


async def fetch_records(
    session: aiohttp.ClientSession,
    url: str,
    results: list[Result],
    wait_s: float,
    poll_s: float = 0.25,
    parallel: int = 32,
    label_wait_s: float = math.inf,
) -> None:
    """Fill ``result.energy`` for every successful result, waiting at most ``wait_s`` in all.

    A record can be final before our client span (which carries the task) reaches the sidecar,
    which then labels the final record (docs/vllm.md); so a final record still without its task
    is read again for up to ``label_wait_s``, within ``wait_s``. The runner passes 0 when no client
    span was delivered (nothing would label it); by default the wait is ``wait_s``, since a loaded
    sidecar can take seconds (2 s was too short on a busy CI machine, where the spans came late).
    """
    deadline = time.monotonic() + wait_s
    ok = [r for r in results if r.ok]

    async def one(result: Result) -> None:
        try:
            await _fetch_one(session, url, result, deadline, poll_s, label_wait_s)
        except Exception as err:  # one record read that goes wrong costs no other request's
            result.energy_note = f"record not read: {type(err).__name__}: {str(err)[:200]}"

    await gather_bounded(one, ok, parallel)
