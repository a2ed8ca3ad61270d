"""A proxy in front of the loadgen's fake OpenAI server (tests/loadgen/fake_server.py), both ways:
in the sidecar's process (the ProxyTap) and as its own process's code (tests.sidecar.proxy.harness)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest

from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.attribution.fit import EnergyModelFit
from sidecar.attribution.floor import FloorEstimate
from sidecar.attribution.rules import FittedRule
from sidecar.proxy.energy import Prices
from sidecar.proxy.tap import ProxyTap
from tests.loadgen.fake_server import FakeServer
from tests.sidecar.proxy.harness import ProcessProxy

PRICES = Prices("estimate", True, floor_w=10.0, j_per_step=0.5, j_per_decode_token=0.1, r2=0.75)


MODES = ("in-process", "process")
AnyProxy = ProxyTap | ProcessProxy


@dataclass
class Proxied:
    fake: FakeServer
    tap: AnyProxy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.tap.port}"

    @property
    def records(self) -> str:
        """Where the responses' record URLs point: the sidecar's API."""
        port = self.tap.api_port if isinstance(self.tap, ProcessProxy) else 9464
        return f"http://127.0.0.1:{port}/v1/requests"


def start_tap(upstream: str, mode: str = "in-process", **kwargs: object) -> AnyProxy:
    """The proxy in ``mode``: the sidecar's tap, or the proxy process's code with the sidecar's receiver."""
    tap: AnyProxy
    if mode == "process":
        tap = ProcessProxy(upstream, PRICES, **kwargs)
    else:
        base = "http://{}:9464".format
        tap = ProxyTap(upstream, prices=lambda: PRICES, record_base=base, **kwargs)  # type: ignore[arg-type]
    tap.start()
    return tap


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """Each proxy test runs with the proxy in the sidecar's process and in its own."""
    return str(request.param)


@pytest.fixture
async def proxied(mode: str) -> AsyncIterator[Proxied]:
    fake = FakeServer(token_s=0.001)
    await fake.start()
    tap = start_tap(fake.url, mode, tenant_header="X-Tenant", max_body_bytes=4096)
    try:
        yield Proxied(fake, tap)
    finally:
        tap.stop()
        await fake.stop()


async def drain(
    tap: AnyProxy, finished: int = 1, timeout_s: float = 5.0
) -> tuple[list[WorkEvent], list[RequestInfo]]:
    """Drain the tap, as the sidecar's ticks do, until ``finished`` requests have ended.

    The client can read a response's last byte a moment before the proxy's handler
    marks its trace done, so a test drains until then instead of once.
    """
    work: list[WorkEvent] = []
    infos: list[RequestInfo] = []
    deadline = time.monotonic() + timeout_s
    while sum(i.end_s is not None for i in infos) < finished and time.monotonic() < deadline:
        more_work, more_infos = tap.due(time.monotonic())
        work += more_work
        infos += more_infos
        await asyncio.sleep(0.01)
    return work, infos


def fitted_rule(seed: int = 0) -> FittedRule:
    """A fitted rule trained on noisy ticks of a known model (floor 10 W given)."""
    rng = np.random.default_rng(seed)
    fit = EnergyModelFit(min_busy_ticks=20, rows_of_ticks=1, floor=FloorEstimate("cpu", override_w=10.0))
    truth = np.array([0.5, 0.01, 0.2, 1e-5, 1e-4, 0.0])  # J per unit of each FIT_WORK term
    for k in range(80):
        work = np.array([rng.uniform(1, 4), rng.uniform(0, 300), rng.uniform(0, 40), 0, 0, 0])
        work[3], work[4] = work[1] ** 2 / 2 * rng.uniform(0.5, 1.5), work[2] * rng.uniform(50, 400)
        energy_j = 10.0 * 0.1 + float(truth @ work) * rng.normal(1.0, 0.05)
        fit.add(work, 0.1, energy_j, 0.1 * k)
    assert fit.ready and fit.cov.any()
    return FittedRule(fit)
