"""A proxy tap in front of the loadgen's fake OpenAI server (tests/loadgen/fake_server.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.proxy.energy import Prices
from sidecar.proxy.tap import ProxyTap
from tests.loadgen.fake_server import FakeServer

PRICES = Prices("estimate", True, floor_w=10.0, j_per_step=0.5, j_per_decode_token=0.1, r2=0.75)


@dataclass
class Proxied:
    fake: FakeServer
    tap: ProxyTap

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.tap.port}"


def start_tap(upstream: str, **kwargs: object) -> ProxyTap:
    tap = ProxyTap(upstream, prices=lambda: PRICES, record_base=lambda host: f"http://{host}:9464", **kwargs)  # type: ignore[arg-type]
    tap.start()
    return tap


@pytest.fixture
async def proxied() -> AsyncIterator[Proxied]:
    fake = FakeServer(token_s=0.001)
    await fake.start()
    tap = start_tap(fake.url, tenant_header="X-Tenant", max_body_bytes=4096)
    try:
        yield Proxied(fake, tap)
    finally:
        tap.stop()
        await fake.stop()


async def drain(
    tap: ProxyTap, finished: int = 1, timeout_s: float = 5.0
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
