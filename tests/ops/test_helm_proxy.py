"""The chart's proxy mode: `jouletrace proxy` in its own container in front of vLLM, reachable through
the Service, feeding the sidecar over the pod's localhost."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.ops.conftest import CHART
from tests.ops.helm import FakeKube, lint, render

PROXY_KNOBS = (
    "proxy_upstream",
    "proxy_host",
    "proxy_port",
    "proxy_tenant_header",
    "proxy_max_body_bytes",
    "proxy_sidecar_url",
    "proxy_wire_port",
    "log_level",
    "shutdown_grace_s",
)


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKube]:
    server = FakeKube()
    yield server
    server.close()


def _kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def _init(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    pod = _kind(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["initContainers"] if c["name"] == name]
    assert isinstance(container, dict)
    return container


def _sidecar(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _init(docs, "jouletrace")


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container["env"]}


def test_proxy_mode_runs_the_proxy_in_its_own_container_feeding_the_sidecar_on_localhost(
    kube: FakeKube,
) -> None:
    docs = render(kube, CHART, {"mode": "vllm", "proxy": {"enabled": True}})
    sidecar, proxy = _sidecar(docs), _init(docs, "jouletrace-proxy")
    names = [c["name"] for c in _kind(docs, "Deployment")["spec"]["template"]["spec"]["initContainers"]]
    assert names.index("jouletrace-proxy") == names.index("jouletrace") + 1  # started after the sidecar
    assert proxy["args"] == ["proxy"] and proxy["restartPolicy"] == "Always"
    env = _env(proxy)
    assert env["JOULETRACE_PROXY_UPSTREAM"] == "http://localhost:8000"
    assert env["JOULETRACE_PROXY_HOST"] == "0.0.0.0"
    assert env["JOULETRACE_PROXY_SIDECAR_URL"] == "http://127.0.0.1:9464"  # prices, record URLs
    assert set(env) <= {f"JOULETRACE_{k.upper()}" for k in PROXY_KNOBS}
    assert {"name": "proxy", "containerPort": 8001, "protocol": "TCP"} in proxy["ports"]
    assert proxy["readinessProbe"]["tcpSocket"] == {"port": "proxy"}
    assert proxy["securityContext"] == sidecar["securityContext"]
    side = _env(sidecar)
    assert "JOULETRACE_PROXY_UPSTREAM" not in side  # no second proxy inside the sidecar
    assert side["JOULETRACE_PROXY_WIRE_HOST"] == "127.0.0.1"  # the timings arrive on localhost only
    assert side["JOULETRACE_OTLP_PORT"] == "0" and side["JOULETRACE_PLUGIN_PORT"] == "0"
    assert all(p["name"] != "proxy" for p in sidecar["ports"])
    vllm = [
        c for c in _kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"] if c["name"] == "vllm"
    ]
    assert not any(a.startswith("--otlp-traces-endpoint") for a in vllm[0]["args"])
    ports = {p["name"]: p["port"] for p in _kind(docs, "Service")["spec"]["ports"]}
    assert ports["proxy"] == 8001


def test_proxy_knobs_keep_their_one_name_and_off_means_no_proxy(kube: FakeKube) -> None:
    config = {
        "proxy_port": 9000,
        "tenant_top_n": 5,
        "port": 9500,
        "proxy_wire_port": 9600,
        "shutdown_grace_s": 7,
    }
    docs = render(kube, CHART, {"proxy": {"enabled": True}, "sidecar": {"config": config}}, release="knobs")
    proxy, side = _env(_init(docs, "jouletrace-proxy")), _env(_sidecar(docs))
    assert proxy["JOULETRACE_PROXY_PORT"] == "9000" and proxy["JOULETRACE_PROXY_WIRE_PORT"] == "9600"
    assert proxy["JOULETRACE_PROXY_SIDECAR_URL"] == "http://127.0.0.1:9500"
    assert proxy["JOULETRACE_SHUTDOWN_GRACE_S"] == "7" and "JOULETRACE_TENANT_TOP_N" not in proxy
    assert side["JOULETRACE_TENANT_TOP_N"] == "5" and side["JOULETRACE_PROXY_WIRE_PORT"] == "9600"
    plain = render(kube, CHART, {}, release="plain")
    pod = _kind(plain, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]].count("jouletrace-proxy") == 0
    assert not any(e["name"] == "JOULETRACE_PROXY_UPSTREAM" for e in _sidecar(plain)["env"])


def test_existing_pod_mode_patches_in_the_proxy_container_too(kube: FakeKube) -> None:
    values = {
        "mode": "existing-pod",
        "existingPod": {"selector": {"app": "llm"}},
        "proxy": {"enabled": True},
        "sidecar": {"config": {"proxy_upstream": "http://localhost:8080"}},
    }
    docs = render(kube, CHART, values, release="patch")
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "patch.yaml" in d.get("data", {})]
    patch = yaml.safe_load(cm["data"]["patch.yaml"])
    inits = {c["name"]: c for c in patch["spec"]["template"]["spec"]["initContainers"]}
    assert _env(inits["jouletrace-proxy"])["JOULETRACE_PROXY_UPSTREAM"] == "http://localhost:8080"
    assert "JOULETRACE_PROXY_UPSTREAM" not in _env(inits["jouletrace"])


def test_proxy_mode_lints_clean() -> None:
    assert [m for m in lint(CHART, {"proxy": {"enabled": True}}) if m[0] != "INFO"] == []
