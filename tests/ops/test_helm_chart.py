"""The Helm chart, checked by real Helm (helm-sdkpy): lint and render every CI values file, then
read the rendered manifests like a reviewer would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.config import KNOBS, env_name
from tests.ops.conftest import CHART, REPO, RULES
from tests.ops.helm import FakeKube, lint, render

CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))


def _values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKube]:
    server = FakeKube()
    yield server
    server.close()


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = _by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name!r}")


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_ci_has_a_values_file_per_mode() -> None:
    assert sorted(_values(p)["mode"] for p in CI_VALUES) == ["diffusion", "existing-pod", "vllm"]


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda p: p.stem)
def test_helm_lint_passes_with_each_ci_values_file(path: Path, kube: FakeKube) -> None:
    messages = [m for m in lint(CHART, _values(path)) if m[0] not in ("INFO",)]
    if messages:
        # Lint lost Helm's text (see tests/ops/helm.py); a render gives the message itself.
        try:
            render(kube, CHART, _values(path))
            detail = "render succeeded"
        except Exception as err:  # helm_sdkpy.HelmError
            detail = str(err)
        pytest.fail(f"helm lint {path.name}: {messages}\nHelm: {detail}")


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda p: p.stem)
def test_each_ci_values_file_renders(path: Path, kube: FakeKube) -> None:
    docs = render(kube, CHART, _values(path))
    assert docs


def test_vllm_mode_runs_the_sidecar_as_a_hardened_native_sidecar(kube: FakeKube) -> None:
    docs = render(kube, CHART, _values(CHART / "ci" / "vllm-values.yaml"))
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    sidecar = _container(pod, "jouletrace")
    assert sidecar in pod["initContainers"] and sidecar["restartPolicy"] == "Always"
    sc = sidecar["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sidecar["resources"]["requests"] and sidecar["resources"]["limits"]
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports == {"metrics": 9464, "otlp-grpc": 4317}
    # Every writable path is a volume: the ledger directory and /tmp.
    mounts = {m["mountPath"] for m in sidecar["volumeMounts"]}
    assert {"/var/lib/jouletrace", "/tmp"} <= mounts


def test_sidecar_config_becomes_jouletrace_env_vars_with_the_sidecars_own_names(kube: FakeKube) -> None:
    docs = render(kube, CHART, _values(CHART / "ci" / "vllm-values.yaml"))
    env = _env(_container(_one(docs, "Deployment")["spec"]["template"]["spec"], "jouletrace"))
    knob_envs = {env_name(k.name) for k in KNOBS}
    ours = {k: v for k, v in env.items() if k.startswith("JOULETRACE_")}
    assert set(ours) <= knob_envs, f"not sidecar knobs: {set(ours) - knob_envs}"
    assert ours["JOULETRACE_METER"] == "nvml"
    assert ours["JOULETRACE_MODEL"] == "Qwen/Qwen3-0.6B"  # defaults to vllm.model
    assert ours["JOULETRACE_LEDGER_MAX_ROWS"] == "1000000"  # not "1e+06"
    assert ours["JOULETRACE_SETTLE_S"] == "2.5"
    assert ours["JOULETRACE_PORT"] == "9464"
    # the OTLP memory limit follows the container's (80 % of it, read from the cgroup), no fixed MB
    assert ours["JOULETRACE_OTLP_MEMORY_LIMIT_PERCENT"] == "80"
    assert ours["JOULETRACE_OTLP_MEMORY_LIMIT_MB"] == "0"


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda p: p.stem)
def test_the_chart_binds_every_listener_explicitly_and_only_http_beyond_localhost(
    path: Path, kube: FakeKube
) -> None:
    docs = render(kube, CHART, _values(path))
    if _by_kind(docs, "Deployment"):
        env = _env(_container(_one(docs, "Deployment")["spec"]["template"]["spec"], "jouletrace"))
    else:  # existing-pod: the patch for the user's Deployment carries the same env
        env = _knob_env_in_patch(docs)
    assert env["JOULETRACE_HOST"] == "0.0.0.0"  # Prometheus and the kubelet reach it on the pod IP
    assert env["JOULETRACE_OTLP_HOST"] == "127.0.0.1" and env["JOULETRACE_PLUGIN_HOST"] == "127.0.0.1"
    assert env["JOULETRACE_HOOK_HOST"] == "127.0.0.1"


def _knob_env_in_patch(docs: list[dict[str, Any]]) -> dict[str, str]:
    for cm in _by_kind(docs, "ConfigMap"):
        for text in cm.get("data", {}).values():
            if "JOULETRACE_HOST" in text:
                patch = yaml.safe_load(text)
                for container in _walk_containers(patch):
                    if container.get("name") == "jouletrace":
                        return _env(container)
    raise AssertionError("no sidecar patch with the listener knobs")


def _walk_containers(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "image" in node and "name" in node:
            yield node
        for value in node.values():
            yield from _walk_containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_containers(item)


def test_init_probe_gives_sidecar_and_server_the_same_gpus(kube: FakeKube) -> None:
    values = {"mode": "vllm", "gpu": {"count": 2}}
    pod = _one(render(kube, CHART, values), "Deployment")["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["initContainers"]]
    assert names == ["jouletrace-gpus", "jouletrace"], "the probe must run (and finish) before the sidecar"
    probe = _container(pod, "jouletrace-gpus")
    assert "restartPolicy" not in probe  # a plain init container: its GPUs pass to later containers
    assert probe["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert _container(pod, "vllm")["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert "--tensor-parallel-size=2" in _container(pod, "vllm")["args"]
    sidecar = _container(pod, "jouletrace")
    assert "nvidia.com/gpu" not in sidecar["resources"].get("limits", {})
    script = sidecar["command"][-1]
    assert "JOULETRACE_DEVICES" in script and "/run/jouletrace/devices" in script
    assert _env(sidecar)["NVIDIA_VISIBLE_DEVICES"] == "all"


def test_vllm_sends_its_request_spans_to_the_sidecar_on_localhost(kube: FakeKube) -> None:
    docs = render(kube, CHART, _values(CHART / "ci" / "vllm-values.yaml"))
    vllm = _container(_one(docs, "Deployment")["spec"]["template"]["spec"], "vllm")
    assert "--otlp-traces-endpoint=grpc://localhost:4317" in vllm["args"]
    assert _env(vllm)["OTEL_EXPORTER_OTLP_TRACES_INSECURE"] == "true"


def test_vllm_plugin_and_metrics_tap_point_at_each_other_on_localhost(kube: FakeKube) -> None:
    values = {"mode": "vllm", "vllm": {"port": 8123}, "sidecar": {"config": {"plugin_port": 9500}}}
    pod = _one(render(kube, CHART, values), "Deployment")["spec"]["template"]["spec"]
    vllm, sidecar = _env(_container(pod, "vllm")), _env(_container(pod, "jouletrace"))
    assert vllm["JOULETRACE_PLUGIN_PORT"] == sidecar["JOULETRACE_PLUGIN_PORT"] == "9500"
    assert sidecar["JOULETRACE_VLLM_METRICS_URL"] == "http://localhost:8123/metrics"
    assert vllm["OTEL_BSP_SCHEDULE_DELAY"] == "100"  # request spans leave vLLM within 100 ms


def test_vllm_runs_the_scheduler_hook_sending_to_the_sidecars_hook_port(kube: FakeKube) -> None:
    hook = "--scheduler-cls=servers.vllm.scheduler_hook.JouletraceScheduler"
    values = {"mode": "vllm", "sidecar": {"config": {"hook_port": 9600}}}
    pod = _one(render(kube, CHART, values), "Deployment")["spec"]["template"]["spec"]
    assert hook in _container(pod, "vllm")["args"]
    assert _env(_container(pod, "vllm"))["JOULETRACE_HOOK_PORT"] == "9600"
    assert _env(_container(pod, "jouletrace"))["JOULETRACE_HOOK_PORT"] == "9600"
    for off in ({"vllm": {"schedulerHook": False}}, {"sidecar": {"config": {"hook_port": 0}}}):
        pod = _one(render(kube, CHART, {"mode": "vllm", **off}), "Deployment")["spec"]["template"]["spec"]
        assert hook not in _container(pod, "vllm")["args"], off


def test_diffusion_mode_with_dra_shares_one_claim_between_server_and_sidecar(kube: FakeKube) -> None:
    docs = render(kube, CHART, _values(CHART / "ci" / "diffusion-values.yaml"))
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": "single-gpu"}]
    for name in ("diffusion", "jouletrace"):
        container = _container(pod, name)
        assert container["resources"]["claims"] == [{"name": "gpu"}], name
        assert "nvidia.com/gpu" not in container["resources"].get("limits", {}), name
    assert [c["name"] for c in pod["initContainers"]] == ["jouletrace"]
    assert _env(_container(pod, "jouletrace"))["JOULETRACE_DEVICES"] == "all"


def test_existing_pod_mode_ships_a_patch_and_selects_the_users_pods(kube: FakeKube) -> None:
    values = _values(CHART / "ci" / "existing-pod-values.yaml")
    docs = render(kube, CHART, values)
    assert not _by_kind(docs, "Deployment")
    assert _one(docs, "Service")["spec"]["selector"] == {"app": "my-vllm"}
    patch = yaml.safe_load(_one(docs, "ConfigMap")["data"]["patch.yaml"])
    sidecar = _container(patch["spec"]["template"]["spec"], "jouletrace")
    assert sidecar["restartPolicy"] == "Always"
    assert _env(sidecar)["JOULETRACE_DEVICES"] == values["sidecar"]["config"]["devices"]


def test_monitoring_objects_scrape_the_sidecar_and_carry_rules_and_dashboards(kube: FakeKube) -> None:
    docs = render(kube, CHART, {"mode": "vllm"})
    service = _one(docs, "Service")
    monitor = _one(docs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics", "http"]
    rule = _one(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    dashboards = {
        name: json.loads(text)
        for cm in _by_kind(docs, "ConfigMap")
        if cm["metadata"]["labels"].get("grafana_dashboard") == "1"
        for name, text in cm["data"].items()
    }
    files = (REPO / "dashboards").glob("*.json")
    expected = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in files}
    assert dashboards == expected


def test_rule_options_drop_alerts_add_labels_and_move_runbooks(kube: FakeKube) -> None:
    values = {
        "mode": "vllm",
        "prometheusRule": {
            "disabledAlerts": ["JouletraceEnergyNotMeasured"],
            "alertLabels": {"team": "inference"},
            "runbookBaseUrl": "https://wiki.example/jouletrace",
        },
    }
    groups = _one(render(kube, CHART, values), "PrometheusRule")["spec"]["groups"]
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    assert "JouletraceEnergyNotMeasured" not in {a["alert"] for a in alerts}
    for alert in alerts:
        assert alert["labels"]["team"] == "inference" and alert["labels"]["severity"]
        assert (
            alert["annotations"]["runbook_url"] == f"https://wiki.example/jouletrace#{alert['alert'].lower()}"
        )


@pytest.mark.parametrize("part", ["service", "serviceMonitor", "prometheusRule", "dashboards"])
def test_each_monitoring_part_can_be_turned_off(part: str, kube: FakeKube) -> None:
    kinds = {
        "service": ("Service", "ServiceMonitor"),
        "serviceMonitor": ("ServiceMonitor",),
        "prometheusRule": ("PrometheusRule",),
        "dashboards": (),
    }[part]
    docs = render(kube, CHART, {"mode": "vllm", part: {"enabled": False}})
    for kind in kinds:
        assert not _by_kind(docs, kind), kind
    if part == "dashboards":
        assert not [d for d in _by_kind(docs, "ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"]]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"sidecar": {"config": {"poll_interval": 0.01}}}, "poll_interval"),
        ({"sidecar": {"config": {"meter": "nvm"}}}, "meter"),
        ({"mode": "triton"}, "mode"),
        ({"sidecar": {"config": {"devices": "GPU-1"}}}, "gpu.visibility=explicit"),
        ({"gpu": {"visibility": "explicit"}}, "sidecar.config.devices"),
        ({"gpu": {"visibility": "dra"}}, "resourceClaimTemplateName"),
        ({"mode": "existing-pod"}, "existingPod.selector"),
        ({"sidecar": {"config": {"port": 0}}}, "sidecar.config.port 0"),  # probes and Service said 9464
        ({"proxy": {"enabled": True}, "sidecar": {"config": {"proxy_port": 0}}}, "proxy_port 0"),
        ({"sidecar": {"config": {"tick_interval_s": 1e-9}}}, "tick_interval_s"),
    ],
)
def test_bad_values_fail_with_a_message_naming_the_value(
    values: dict[str, Any], message: str, kube: FakeKube
) -> None:
    import helm_sdkpy

    with pytest.raises(helm_sdkpy.HelmError, match=message.replace(".", r"\.")):
        render(kube, CHART, values)


def test_values_schema_lists_exactly_the_sidecars_knobs_with_their_types_and_choices() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    config = schema["properties"]["sidecar"]["properties"]["config"]
    assert config["additionalProperties"] is False
    kinds = {int: "integer", float: "number", str: "string", bool: "boolean"}
    assert list(config["properties"]) == [k.name for k in KNOBS]
    for knob in KNOBS:
        prop = config["properties"][knob.name]
        assert prop["type"] == kinds[type(knob.default)], knob.name
        assert prop.get("enum") == (list(knob.choices) if knob.choices else None), knob.name


def _pod_spec(kube: FakeKube, values: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = _one(render(kube, CHART, values), "Deployment")["spec"]["template"]["spec"]
    return spec


def test_otlp_port_knob_moves_the_receiver_and_zero_turns_tracing_off(kube: FakeKube) -> None:
    pod = _pod_spec(kube, {"sidecar": {"config": {"otlp_port": 14317}}})
    assert "--otlp-traces-endpoint=grpc://localhost:14317" in _container(pod, "vllm")["args"]
    port = {"name": "otlp-grpc", "containerPort": 14317, "protocol": "TCP"}
    assert port in _container(pod, "jouletrace")["ports"]
    off = _pod_spec(kube, {"sidecar": {"config": {"otlp_port": 0}}})
    assert not [a for a in _container(off, "vllm")["args"] if "otlp" in a]
    assert [p["name"] for p in _container(off, "jouletrace")["ports"]] == ["metrics"]
