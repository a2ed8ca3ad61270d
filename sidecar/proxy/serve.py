"""The proxy's server: aiohttp's low-level server on ``host:port`` with one client session to the upstream.

Shared by the in-process proxy (:class:`~sidecar.proxy.tap.ProxyTap`, on a thread
of the sidecar) and the proxy's own process (:mod:`.process`). Start-up
failures (the port taken, a bad upstream URL) raise
:class:`~sidecar.errors.ConfigError` naming the knob.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from sidecar.errors import ConfigError
from sidecar.proxy.forward import make_proxy_server
from sidecar.proxy.upstream import ProxyContext

__all__ = ["ProxyServer", "check_upstream"]


def check_upstream(url: str) -> str:
    """The upstream base URL without a trailing slash; ConfigError unless it is
    http(s)://host[:port][/path] with a port from 1 to 65535 and no query, fragment or user info
    (each request's path and query are appended to it)."""
    parts = urlsplit(url)
    try:
        port = parts.port  # ValueError: not a number, or out of 0-65535
    except ValueError:
        port = 0
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or port == 0
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
    ):
        raise ConfigError(f"proxy_upstream: {url!r} is not an http(s)://host[:port] URL")
    return url.rstrip("/")


class ProxyServer:
    """The forwarding app for ``ctx``, served on the running event loop."""

    def __init__(
        self, ctx: ProxyContext, host: str, port: int, max_body_bytes: int, grace_s: float = 10.0
    ) -> None:
        self.ctx, self.host, self.port, self.grace_s = ctx, host, port, grace_s
        self.max_body_bytes = max_body_bytes
        self._runner: web.ServerRunner | None = None

    async def start(self) -> int:
        """Listen; the bound port. ``ConfigError`` naming ``proxy_port`` if it cannot."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0)
        connector = aiohttp.TCPConnector(limit=0)  # no cap: one kept-alive connection per stream in flight
        # no cookie jar: a Set-Cookie from the upstream is the client's (passed on), never sent to others
        self.ctx.session = aiohttp.ClientSession(
            timeout=timeout,
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # on close: stop accepting, let requests in flight finish, then cancel them, within grace_s: aiohttp
        # waits its shutdown timeout twice for a handler relaying a stream (for the handlers, then again
        # after cancelling them), so each wait gets half (a stop took 8.2 s of a 4 s grace)
        server = make_proxy_server(self.ctx, self.max_body_bytes, access_log=None, handler_cancellation=True)
        runner = web.ServerRunner(server, shutdown_timeout=self.grace_s / 2)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, backlog=1024)
            await site.start()
        except OSError as err:
            await runner.cleanup()
            await self.ctx.session.close()
            raise ConfigError(
                f"proxy_port: cannot serve the proxy on {self.host}:{self.port}: {err}"
            ) from err
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.ctx.session is not None:
            await self.ctx.session.close()
