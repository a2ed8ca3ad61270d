"""The HTTP API on a real socket: /metrics, /v1/requests/{id}, /healthz, /readyz."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.resources import Resource
from prometheus_client import CONTENT_TYPE_LATEST

from sidecar.export.api import Served, make_app, serve
from sidecar.export.metrics import MetricsExporter
from sidecar.export.store import Ledger
from tests.sidecar.export.factories import golden_snapshot, make_record

IN_FLIGHT = make_record(request_id="req-live", final=False, energy_j=3.0).to_json()


class Readiness:
    def __init__(self) -> None:
        self.state = (True, "meter nvml and tap otlp running")

    def __call__(self) -> tuple[bool, str]:
        return self.state


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
async def server(readiness: Readiness) -> AsyncIterator[Served]:
    snap = golden_snapshot()
    exporter = MetricsExporter(lambda: snap, resource=Resource({}))
    ledger = Ledger(":memory:")
    ledger.put_many([make_record()])
    exporter.record([make_record()])

    def lookup(request_id: str) -> dict[str, Any] | None:
        return IN_FLIGHT if request_id == "req-live" else ledger.get(request_id)

    served = await serve(make_app(metrics=exporter.render, lookup=lookup, ready=readiness), "127.0.0.1", 0)
    yield served
    await served.close()
    exporter.shutdown()
    ledger.close()


async def fetch(served: Served, path: str) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session, session.get(served.url + path) as resp:
        return resp.status, resp.headers["Content-Type"], await resp.read()


async def test_serve_on_port_zero_reports_the_bound_port(server: Served) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


async def test_metrics_serves_the_exposition_with_prometheus_content_type(server: Served) -> None:
    status, ctype, body = await fetch(server, "/metrics")
    assert status == 200
    assert ctype == CONTENT_TYPE_LATEST
    assert b"# TYPE hw_energy_joules_total counter" in body
    assert b"gen_ai_server_request_energy_joules_count" in body


async def test_finished_request_is_served_from_the_ledger(server: Served) -> None:
    status, ctype, body = await fetch(server, "/v1/requests/req-0001")
    assert status == 200 and ctype.startswith("application/json")
    record = json.loads(body)
    assert record["energy_j"] == 12.5 and record["final"] is True
    assert record["joules_per_output_unit"] == pytest.approx(0.05)


async def test_in_flight_request_is_served_with_final_false(server: Served) -> None:
    status, _, body = await fetch(server, "/v1/requests/req-live")
    assert status == 200
    assert json.loads(body)["final"] is False


async def test_unknown_request_is_404_json_naming_the_id(server: Served) -> None:
    status, ctype, body = await fetch(server, "/v1/requests/nope-42")
    assert status == 404 and ctype.startswith("application/json")
    payload = json.loads(body)
    assert payload["request_id"] == "nope-42"
    assert "unknown" in payload["error"] and "not" in payload["error"]


async def test_healthz_answers_ok(server: Served) -> None:
    status, _, body = await fetch(server, "/healthz")
    assert (status, body) == (200, b"ok")


async def test_readyz_is_200_when_ready_and_503_with_the_reason_when_not(
    server: Served, readiness: Readiness
) -> None:
    status, _, body = await fetch(server, "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    readiness.state = (False, "no energy reading yet from meter nvml")
    status, ctype, body = await fetch(server, "/readyz")
    assert status == 503 and ctype.startswith("application/json")
    assert json.loads(body) == {"ready": False, "reason": "no energy reading yet from meter nvml"}


@pytest.mark.parametrize("path", ["/v1/requests/" + "x" * 300, "/v1/requests/a%0Ab", "/v1/requests/%7F"])
async def test_a_request_id_that_fails_the_id_check_gets_400_with_the_reason_and_is_counted(
    path: str,
) -> None:
    counts: Counter[str] = Counter()
    looked_up: list[str] = []

    def lookup(request_id: str) -> dict[str, Any] | None:
        looked_up.append(request_id)
        return None

    served = await serve(
        make_app(metrics=bytes, lookup=lookup, ready=lambda: (True, ""), counts=counts), "127.0.0.1", 0
    )
    try:
        status, _, body = await fetch(served, path)
        assert status == 400 and json.loads(body)["reason"] == "bad_id"
        assert counts["rejected_bad_id"] == 1 and looked_up == []
        assert (await fetch(served, "/healthz"))[0] == 200
    finally:
        await served.close()


async def test_a_failing_lookup_is_a_500_for_that_request_and_the_server_keeps_serving() -> None:
    counts: Counter[str] = Counter()

    def lookup(request_id: str) -> dict[str, Any] | None:
        if request_id == "boom":
            raise OverflowError("int too large")
        return {"request_id": request_id}

    served = await serve(
        make_app(metrics=bytes, lookup=lookup, ready=lambda: (True, ""), counts=counts), "127.0.0.1", 0
    )
    try:
        status, _, body = await fetch(served, "/v1/requests/boom")
        assert status == 500 and json.loads(body)["request_id"] == "boom" and counts["lookup_errors"] == 1
        assert (await fetch(served, "/v1/requests/fine"))[0] == 200
    finally:
        await served.close()


async def test_the_running_sidecar_exports_refused_http_requests_in_the_tap_events_metric() -> None:
    import asyncio

    from sidecar.config import SidecarConfig
    from sidecar.wiring import build_sidecar

    config = SidecarConfig(
        meter="cpu-model", port=0, otlp_port=0, plugin_port=0, hook_port=0, proxy_wire_port=0, ledger_path=""
    )
    sidecar = build_sidecar(config)
    stop = asyncio.Event()
    task = asyncio.create_task(sidecar.run(stop))
    try:
        while sidecar.http_port is None:
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{sidecar.http_port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/v1/requests/" + "x" * 300) as resp:
                assert resp.status == 400
            sidecar.tick()
            async with session.get(url + "/metrics") as resp:
                text = await resp.text()
    finally:
        stop.set()
        await task
        sidecar.close()
    from prometheus_client.parser import text_string_to_metric_families

    refused = {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "jouletrace_tap_events_total" and s.labels["jouletrace_tap"] == "http_api"
    }
    assert refused == {"rejected_bad_id": 1.0}


async def test_an_unknown_path_and_another_method_are_refused_by_the_router_and_counted() -> None:
    """An unknown request id is a 404 of the API (not a refusal); an unknown path or method is one."""
    counts: Counter[str] = Counter()
    served = await serve(
        make_app(metrics=bytes, lookup=lambda _: None, ready=lambda: (True, ""), counts=counts),
        "127.0.0.1",
        0,
    )
    try:
        assert (await fetch(served, "/v1/requests/nobody"))[0] == 404 and not counts
        assert (await fetch(served, "/admin"))[0] == 404 and (await fetch(served, "/metrics/x"))[0] == 404
        async with aiohttp.ClientSession() as session, session.post(served.url + "/metrics") as resp:
            assert resp.status == 405
        assert counts == Counter({"rejected_unknown_path": 2, "rejected_method": 1})
        assert (await fetch(served, "/healthz"))[0] == 200
    finally:
        await served.close()
