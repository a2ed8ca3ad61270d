"""What every forwarded request shares: the context, the upstream call, headers, error answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from sidecar.proxy.learn import Counts, RequestTrace

__all__ = [
    "ANSWER_DROP",
    "ENERGY_HEADER",
    "HOP",
    "RECORD_URL",
    "REQUEST_ID",
    "TASK_HEADER",
    "ProxyContext",
    "cut_off",
    "error",
    "forward_headers",
    "open_upstream",
    "record_path",
]

REQUEST_ID = "X-Request-Id"
RECORD_URL = "X-Jouletrace-Record-Url"
ENERGY_HEADER = "X-Jouletrace-Energy-Joules"
TASK_HEADER = "X-Jouletrace-Task"
HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
# an answer's headers not passed on: the hop-by-hop ones, and the proxy's own (an upstream's
# X-Jouletrace-Energy-Joules or Record-Url reached the client where the proxy set none)
ANSWER_DROP = HOP | {ENERGY_HEADER.lower(), RECORD_URL.lower()}


def record_path(request_id: str) -> str:
    """The path of a request's record on the sidecar's API, the id one path segment (``/`` quoted:
    ``team-a/req-1`` was a URL that always answered 404)."""
    return f"/v1/requests/{quote(request_id, safe='')}"


MAX_JSON_ANSWER_BYTES = 64 << 20  # a plain completion answer read whole to add energy; more passes raw


@dataclass(slots=True)
class ProxyContext:
    """What the handler needs: where to forward, how to learn, what to count."""

    upstream: str  # base URL, no trailing slash
    clock: Callable[[], float]
    begin: Callable[[RequestTrace], str]  # registers a trace; returns its (possibly new) id
    energy: Callable[[RequestTrace], dict[str, Any]]
    record_url: Callable[[web.BaseRequest, str], str]
    counts: Counts
    tenant_header: str = ""
    session: aiohttp.ClientSession | None = None
    in_flight: int = 0


def forward_headers(headers: Any, drop: set[str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        if key.lower() not in drop:
            out.add(key, value)
    return out


def error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status)


def cut_off(ctx: ProxyContext, request: web.BaseRequest, answered: bool) -> web.StreamResponse:
    """The upstream broke off mid-answer (counted ``upstream_broken``): a 502 if the client has
    had nothing yet, else its connection is cut too, so it sees a truncated answer, not a clean end."""
    ctx.counts.add("upstream_broken")
    if not answered:
        return error(502, f"upstream {ctx.upstream} broke off its answer", "upstream_broken")
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=502)  # never sent: the connection is closed


async def open_upstream(
    ctx: ProxyContext, request: web.BaseRequest, body: bytes, headers: CIMultiDict[str]
) -> aiohttp.ClientResponse | web.Response:
    """The upstream's answer (its head read), or a 502. A kept-alive connection the upstream closed
    (an engine that answers an error, then closes without ``Connection: close``) fails the request
    sent on it before any answer: that request is sent once more on another connection (counted
    ``upstream_retried``), not answered 502 (probe 10: 5 of 10 good requests after a bad one's 500).
    A connection that cannot be made at all is the upstream down: a 502 at once."""
    assert ctx.session is not None
    url = ctx.upstream + request.rel_url.raw_path_qs
    for attempt in (1, 2):
        try:
            return await ctx.session.request(
                request.method, url, headers=headers, data=body or None, allow_redirects=False
            )
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as err:
            if attempt == 1 and _closed_before_answer(err):
                ctx.counts.add("upstream_retried")
                continue
            ctx.counts.add("upstream_down")
            message = f"upstream {ctx.upstream} unreachable: {type(err).__name__}: {err}"
            return error(502, message, "upstream_unavailable")
        except aiohttp.ClientError as err:  # a head it cannot read (a header over 8 KiB, a bad status
            ctx.counts.add("upstream_bad_answer")  # line), a URL it cannot make: was a 500, uncounted
            message = f"upstream {ctx.upstream} answered what cannot be read: {type(err).__name__}: {err}"
            return error(502, message, "upstream_bad_answer")
    raise AssertionError("unreachable")  # pragma: no cover


def _closed_before_answer(err: BaseException) -> bool:
    """An open connection closed or reset under the request, no answer read: not a refused connect."""
    if isinstance(err, aiohttp.ClientConnectorError):  # the connect itself failed: the upstream is down
        return False
    return isinstance(err, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError))
