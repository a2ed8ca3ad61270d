"""The proxy tap from the sidecar's config: prices from the sidecar's latest snapshot, records on its API."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sidecar.config import SidecarConfig
from sidecar.contracts.ports import url_host
from sidecar.proxy.energy import Prices
from sidecar.proxy.prices import prices_from_snapshot
from sidecar.proxy.tap import ProxyTap

if TYPE_CHECKING:
    from sidecar.app import Sidecar

__all__ = ["proxy_tap"]

_WILDCARDS = ("", "0.0.0.0", "::", "[::]")


def proxy_tap(
    config: SidecarConfig,
    sidecar: Callable[[], Sidecar],
    clock: Callable[[], float],
    claimed_by: Callable[[str], bool] | None = None,
) -> ProxyTap:
    """The proxy tap; ``sidecar()`` returns the sidecar it feeds (built after its taps); ``claimed_by``:
    whether the vLLM taps have a request's exact work."""

    def prices() -> Prices:
        side = sidecar()
        return prices_from_snapshot(side.snapshot(), side.attributor.rule)

    def record_base(client_host: str) -> str:
        # the sidecar's API: where the client reached the proxy when the API listens on every address
        host = client_host if config.host in _WILDCARDS else config.host
        return f"http://{url_host(host)}:{sidecar().http_port or config.port}"

    return ProxyTap(
        config.proxy_upstream,
        prices=prices,
        record_base=record_base,
        host=config.proxy_host,
        port=config.proxy_port,
        tenant_header=config.proxy_tenant_header,
        max_body_bytes=config.proxy_max_body_bytes,
        hold_s=config.settle_s / 2,
        model=config.model,
        clock=clock,
        claimed_by=claimed_by,
        request_timeout_s=config.request_timeout_s,
    )
