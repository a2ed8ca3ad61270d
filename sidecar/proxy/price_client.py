"""The proxy process's prices: the sidecar's live fitted model, fetched from its API every second.

:class:`PriceClient` asks ``GET <proxy_sidecar_url>/v1/prices`` every
:data:`REFRESH_S` on the proxy's event loop and keeps the last good
:class:`~sidecar.contracts.proxy_wire.PriceSheet`; a response is priced with it
the moment its usage arrives, so no request waits on the sidecar. A failed fetch
(the sidecar unreachable, slow, or answering something that is not a sheet) is
counted (``price_errors``) and the last good sheet serves on for up to
:data:`STALE_S`. Past that, or before the first sheet, a response still passes
through unchanged, and its ``energy`` object says why it has no figure
(``{"joules": null, "basis": "unavailable", "reason": ...}``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp

from sidecar.contracts.proxy_wire import PriceSheet
from sidecar.proxy.learn import Counts

__all__ = ["REFRESH_S", "STALE_S", "PriceClient"]

REFRESH_S = 1.0  # between fetches (the sidecar refits at most once a tick)
STALE_S = 30.0  # a sheet this old is not used
_TIMEOUT_S = 2.0

log = logging.getLogger(__name__)


class PriceClient:
    """The latest price sheet from the sidecar at ``sidecar_url``."""

    def __init__(
        self, sidecar_url: str, counts: Counts, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.url = f"{sidecar_url.rstrip('/')}/v1/prices"
        self.counts, self.clock = counts, clock
        self.sheet: PriceSheet | None = None
        self.fetched_s = float("-inf")
        self.problem = "no price sheet fetched yet"

    def current(self) -> tuple[PriceSheet | None, str]:
        """The sheet to price with (None when there is none fresh enough), and why not."""
        age_s = self.clock() - self.fetched_s
        if self.sheet is not None and age_s <= STALE_S:
            return self.sheet, ""
        if self.sheet is not None:
            return None, f"the last price sheet from {self.url} is {age_s:.0f} s old ({self.problem})"
        return None, f"no price sheet from {self.url} yet ({self.problem})"

    async def fetch(self, session: aiohttp.ClientSession) -> bool:
        """One fetch; True if it brought a good sheet."""
        try:
            async with session.get(self.url, timeout=aiohttp.ClientTimeout(total=_TIMEOUT_S)) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                sheet = PriceSheet.parse(await resp.json(content_type=None))
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as err:
            self.counts.add("price_errors")
            self.problem = f"{type(err).__name__}: {err}"[:200]
            return False
        self.sheet, self.fetched_s, self.problem = sheet, self.clock(), ""
        return True

    async def run(
        self, session: aiohttp.ClientSession, stop: asyncio.Event, every_s: float = REFRESH_S
    ) -> None:
        """Fetch every ``every_s`` until ``stop``."""
        while not stop.is_set():
            ok = await self.fetch(session)
            if not ok:
                log.debug("price fetch failed: %s", self.problem)
            await asyncio.sleep(every_s)
