"""``jouletrace proxy``: the OpenAI proxy in a process of its own, beside the sidecar.

The proxy's event loop is the only thing in its process: the forwarder (the hot
path: a chunk in, timed, out), the :class:`~sidecar.proxy.sender.WireSender` that
tells the sidecar what each completion did (UDP, every 100 ms), and the
:class:`~sidecar.proxy.price_client.PriceClient` that fetches the live fitted
model's prices from the sidecar's API every second. So the sidecar's tick
(attribution, fit, snapshot) never holds the interpreter lock a stream waits on.
Nothing here imports numpy or attribution (a test holds it).

Where the sidecar is: ``proxy_sidecar_url`` (its API; the record URLs in responses
point there) and ``proxy_wire_port`` (its UDP receiver, on the URL's host). When
the URL names a loopback address (the sidecar beside the proxy, as in a pod), a
record URL uses the host the client reached the proxy by instead, so a client
elsewhere can follow it (the sidecar must then listen beyond loopback: the Helm
chart's does).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp

from sidecar.config import SidecarConfig
from sidecar.contracts.ports import url_host
from sidecar.contracts.proxy_wire import alive_every_s
from sidecar.errors import ConfigError
from sidecar.knobs import http_url
from sidecar.proxy.energy import trace_energy
from sidecar.proxy.learn import Counts, RequestTrace
from sidecar.proxy.loop import loop_name
from sidecar.proxy.price_client import PriceClient
from sidecar.proxy.sender import WireSender
from sidecar.proxy.serve import ProxyServer, check_upstream
from sidecar.proxy.upstream import ProxyContext, record_path

__all__ = ["ProxyProcess", "record_base", "sidecar_address"]

log = logging.getLogger(__name__)

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def sidecar_address(url: str) -> tuple[str, int, str]:
    """``(host, port, base URL)`` of ``proxy_sidecar_url``; ConfigError naming the knob unless http(s)."""
    try:
        http_url(url)  # the knobs' one check of an http(s) URL
    except ValueError as err:
        raise ConfigError(f"proxy_sidecar_url: {err}") from err
    parts = urlsplit(url)
    if parts.hostname is None:  # '' passes the knob's check (no URL); here one is needed
        raise ConfigError(f"proxy_sidecar_url: {url!r} is not an http(s)://host[:port] URL")
    default = 443 if parts.scheme == "https" else 80
    return parts.hostname, parts.port or default, url.rstrip("/")


@functools.lru_cache(maxsize=64)  # per request; bounded, as the client names the host
def record_base(sidecar_url: str, client_host: str) -> str:
    """Where a client finds its record: the sidecar's URL, by the client's name for this host if loopback."""
    host, port, base = sidecar_address(sidecar_url)
    if host not in _LOOPBACK or not client_host:
        return base
    return f"{urlsplit(base).scheme}://{url_host(client_host)}:{port}"


class ProxyProcess:
    """The proxy, its wire to the sidecar and its prices, on one event loop."""

    def __init__(self, config: SidecarConfig, clock: Callable[[], float] = time.monotonic) -> None:
        upstream = check_upstream(config.proxy_upstream)
        host, _, self.sidecar_url = sidecar_address(
            config.proxy_sidecar_url or f"http://127.0.0.1:{config.port}"
        )
        if config.proxy_wire_port == 0:
            raise ConfigError(
                "proxy_wire_port: jouletrace proxy needs the sidecar's UDP port (0 turns it off)"
            )
        self.counts = Counts()
        try:
            self.sender = WireSender(
                (host, config.proxy_wire_port),
                self.counts,
                clock=clock,
                alive_every_s=alive_every_s(config.request_timeout_s),
            )
        except OSError as err:
            raise ConfigError(f"proxy_sidecar_url: cannot resolve {host!r}: {err}") from err
        self.prices = PriceClient(self.sidecar_url, self.counts, clock=clock)
        url = self.sidecar_url
        ctx = ProxyContext(
            upstream=upstream,
            clock=clock,
            begin=self.sender.begin,
            energy=self._energy,
            record_url=lambda req, rid: record_base(url, req.url.host or "") + record_path(rid),
            counts=self.counts,
            tenant_header=config.proxy_tenant_header,
        )
        self.server = ProxyServer(
            ctx, config.proxy_host, config.proxy_port, config.proxy_max_body_bytes, config.shutdown_grace_s
        )

    def _energy(self, trace: RequestTrace) -> dict[str, object]:
        sheet, why = self.prices.current()
        return trace_energy(trace, sheet, why)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop``; then close the server (streams in flight get ``shutdown_grace_s`` to
        finish, then are cut and end as ``disconnected``) and send the last rows."""
        port = await self.server.start()
        log.info(
            "OpenAI proxy on http://%s:%d -> %s (%s)",
            self.server.host,
            port,
            self.server.ctx.upstream,
            loop_name(asyncio.get_running_loop()),
        )
        prices_session = aiohttp.ClientSession()
        await self.prices.fetch(prices_session)  # the first sheet before the first response, if it can
        sending = asyncio.Event()
        tasks = [
            asyncio.create_task(self.sender.run(sending)),
            asyncio.create_task(self.prices.run(prices_session, stop)),
        ]
        try:
            await stop.wait()
        finally:
            await self.server.close()
            tasks[1].cancel()
            sending.set()  # the sender's last flush: the ends of the streams the close cut
            await asyncio.gather(*tasks, return_exceptions=True)
            await prices_session.close()
            self.sender.close()
