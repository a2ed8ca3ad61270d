"""Hypothesis strategies for the HTTP API's paths and query parameters, and the checks they must pass.

Shared by the tests (``test_fuzz.py``) and ``benchmarks/fuzz.py``. Requests go through
aiohttp's router and the real handlers of :func:`sidecar.export.api.make_app` (with a
timeline-backed ``/v1/energy``), in process:

* :func:`http_paths`: any path at all, with any query string: never a 500, and every
  answer is one of the statuses the API documents;
* :func:`energy_queries`: ``/v1/energy`` with hostile bounds (missing, repeated, not a
  number, NaN, infinite, negative, reversed, over a day apart, huge): 200 only for a
  sane interval, else 400 naming the parameter, counted; never a 500.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import strategies as st

from sidecar.export.api import MAX_INTERVAL_S, make_app, timeline_energy
from sidecar.meters.base import DeviceInfo, Reading
from sidecar.timeline import Timeline

__all__ = ["check_energy_query", "check_http_path", "energy_app", "energy_queries", "http_paths"]

NOW_UNIX_S = 1_780_000_000.0
_ROUTES = ["/metrics", "/healthz", "/readyz", "/v1/energy", "/v1/requests/req-1", "/v1/requests/"]

_segment = st.text(max_size=20)
http_paths = st.tuples(
    st.one_of(
        st.sampled_from(_ROUTES),
        st.lists(_segment, max_size=4).map(lambda parts: "/" + "/".join(quote(p, safe="") for p in parts)),
        st.sampled_from(_ROUTES).flatmap(lambda r: _segment.map(lambda s: r + quote(s, safe="/"))),
    ),
    st.lists(st.tuples(st.text(max_size=12), st.text(max_size=30)), max_size=3),
)

_bound = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(NOW_UNIX_S - 3600, NOW_UNIX_S + 3600).map(repr),
    st.integers(-(10**30), 10**400).map(str),
    st.sampled_from(["", "nan", "inf", "-inf", "1e999", "0x10", " 5", "1_000", "abc", "−1"]),
    st.text(max_size=12),
)
energy_queries = st.lists(st.tuples(st.sampled_from(["start_unix_s", "end_unix_s", "x"]), _bound), max_size=4)


def energy_app() -> Any:
    """The API over a timeline with 100 counter updates (10 s at 100 W) ending at ``NOW_UNIX_S``."""
    timeline = Timeline((DeviceInfo(id="GPU-0", name="fake"),), capacity=256)
    for k in range(101):
        timeline.add(Reading(float(k) * 0.1, (1000.0 + 10.0 * k,)))
    query = timeline_energy(timeline, clock=lambda: 10.0, wall=lambda: NOW_UNIX_S)
    return make_app(
        metrics=bytes, lookup={"req-1": {"request_id": "req-1"}}.get, ready=lambda: (True, ""), energy=query
    )


async def _get(app: Any, path: str) -> tuple[int, Any]:
    """(status, JSON body or None) of ``GET path`` through the router and the real handler."""
    from aiohttp.test_utils import make_mocked_request

    match = await app.router.resolve(make_mocked_request("GET", path, app=app))
    if match.http_exception is not None:  # the router's own answer (404 or 405): no handler runs
        return int(match.http_exception.status), None
    response = await match.handler(make_mocked_request("GET", path, app=app, match_info=dict(match)))
    is_json = response.content_type == "application/json"
    return int(response.status), json.loads(response.text) if is_json else None


async def check_http_path(app: Any, case: tuple[str, list[tuple[str, str]]]) -> None:
    """Any path and query: one of the documented statuses, never a 500."""
    path, params = case
    status, _ = await _get(app, path + ("?" + urlencode(params) if params else ""))
    assert status in (200, 400, 404, 405, 503), (path, params, status)


def _sane(params: list[tuple[str, str]]) -> bool:
    """Whether the API must answer 200: both bounds (first of each) finite, >= 0, ordered, <= a day."""
    first: dict[str, str] = {}
    for key, value in params:
        first.setdefault(key, value)
    try:
        start, end = float(first["start_unix_s"]), float(first["end_unix_s"])
    except (KeyError, ValueError):
        return False
    ok = all(math.isfinite(x) and x >= 0 for x in (start, end))
    return ok and start <= end and end - start <= MAX_INTERVAL_S


async def check_energy_query(app: Any, params: list[tuple[str, str]]) -> None:
    """200 with finite joules for a sane interval, else 400 (counted); never a 500."""
    from sidecar.export.api import ENERGY_REJECTED

    before = app[ENERGY_REJECTED][0]
    status, body = await _get(app, "/v1/energy?" + urlencode(params))
    if _sane(params):
        assert status == 200 and math.isfinite(body["energy_j"]) and body["energy_j"] >= 0, (params, body)
    else:
        assert status == 400 and app[ENERGY_REJECTED][0] == before + 1, (params, status)
        assert body["param"] in ("start_unix_s", "end_unix_s"), body
