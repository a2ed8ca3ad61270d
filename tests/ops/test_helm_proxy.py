"""The chart's proxy mode: the sidecar's OpenAI proxy in front of vLLM, reachable through the Service."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.ops.conftest import CHART
from tests.ops.helm import FakeKube, lint, render


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKube]:
    server = FakeKube()
    yield server
    server.close()


def _kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def _sidecar(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = _kind(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["initContainers"] if c["name"] == "jouletrace"]
    assert isinstance(container, dict)
    return container


def test_proxy_mode_fronts_vllm_and_turns_the_other_vllm_taps_off(kube: FakeKube) -> None:
    docs = render(kube, CHART, {"mode": "vllm", "proxy": {"enabled": True}})
    sidecar = _sidecar(docs)
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["JOULETRACE_PROXY_UPSTREAM"] == "http://localhost:8000"
    assert env["JOULETRACE_PROXY_HOST"] == "0.0.0.0"
    assert env["JOULETRACE_OTLP_PORT"] == "0" and env["JOULETRACE_PLUGIN_PORT"] == "0"
    assert {"name": "proxy", "containerPort": 8001, "protocol": "TCP"} in sidecar["ports"]
    vllm = [
        c for c in _kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"] if c["name"] == "vllm"
    ]
    assert not any(a.startswith("--otlp-traces-endpoint") for a in vllm[0]["args"])
    ports = {p["name"]: p["port"] for p in _kind(docs, "Service")["spec"]["ports"]}
    assert ports["proxy"] == 8001


def test_proxy_knobs_keep_their_one_name_and_off_means_no_proxy(kube: FakeKube) -> None:
    values = {"proxy": {"enabled": True}, "sidecar": {"config": {"proxy_port": 9000, "tenant_top_n": 5}}}
    sidecar = _sidecar(render(kube, CHART, values, release="knobs"))
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["JOULETRACE_PROXY_PORT"] == "9000" and env["JOULETRACE_TENANT_TOP_N"] == "5"
    plain = _sidecar(render(kube, CHART, {}, release="plain"))
    assert not any(e["name"].startswith("JOULETRACE_PROXY") for e in plain["env"])
    assert all(p["name"] != "proxy" for p in plain["ports"])


def test_proxy_mode_lints_clean() -> None:
    assert [m for m in lint(CHART, {"proxy": {"enabled": True}}) if m[0] != "INFO"] == []
