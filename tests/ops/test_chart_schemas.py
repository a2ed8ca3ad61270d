"""The chart's manifests against Kubernetes' own schemas, offline.

The fake API server of tests/ops/helm.py accepts every create, so a misspelt field would pass
the render tests. Here every manifest Helm renders, in every mode, is validated:

- Kubernetes kinds against the OpenAPI schemas of each Kubernetes version the chart supports
  (Chart.yaml ``kubeVersion``: 1.29 and later), as shipped by the ``kubernetes-validate``
  package, *strict* (an unknown field is an error, as ``kubectl apply`` does by default);
- ServiceMonitor and PrometheusRule against the prometheus-operator CRDs' schemas
  (tests/data/prometheus-operator-crds, v0.93.0), unknown fields rejected likewise, their
  metadata against Kubernetes' ObjectMeta;
- the existing-pod mode's strategic-merge patch (a ConfigMap's data) applied to a minimal
  Deployment, so the pod fields it adds are checked too.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.ops.conftest import CHART, REPO
from tests.ops.helm import FakeKube, render

CRDS = REPO / "tests" / "data" / "prometheus-operator-crds"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
# kubeVersion ">=1.29.0-0": every minor version with schemas in kubernetes-validate from there on.
K8S_VERSIONS = [f"1.{minor}.0" for minor in range(29, 38)]


@pytest.fixture(scope="module")
def rendered() -> Iterator[dict[str, list[dict[str, Any]]]]:
    kube = FakeKube()
    try:
        out = {p.stem: render(kube, CHART, yaml.safe_load(p.read_text(encoding="utf-8"))) for p in CI_VALUES}
        out["defaults"] = render(kube, CHART, {})
        yield out
    finally:
        kube.close()


def _strict(schema: Any) -> Any:
    """A CRD's structural schema as JSON Schema, unknown fields rejected where the CRD prunes
    them (objects with properties, no additionalProperties, no x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict schema, for each served version of each CRD file."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version["served"]:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                schema["properties"]["metadata"] = {"type": "object"}  # checked as ObjectMeta below
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


# Pod resourceClaims (gpu.visibility=dra) took their present shape in 1.31; the chart refuses
# dra on older clusters (templates/_validate.tpl).
DRA_MIN_MINOR = 31


def _versions(doc: dict[str, Any]) -> list[str]:
    if "resourceClaims" in json.dumps(doc):
        return [v for v in K8S_VERSIONS if int(v.split(".")[1]) >= DRA_MIN_MINOR]
    return K8S_VERSIONS


def _k8s_errors(doc: dict[str, Any]) -> list[str]:
    errors = []
    for version in _versions(doc):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = "/".join(str(p) for p in err.absolute_path)
            errors.append(f"Kubernetes {version}: {path}: {err.message[:300]}")
    return errors


def _metadata_errors(doc: dict[str, Any]) -> list[str]:
    """A custom resource's metadata as Kubernetes' ObjectMeta (inside an empty ConfigMap)."""
    return _k8s_errors({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]})


def _patched_deployment(patch: dict[str, Any]) -> dict[str, Any]:
    """A minimal Deployment with the patch's pod-spec fields merged in (the user's container kept)."""
    pod_patch = copy.deepcopy(patch["spec"]["template"]["spec"])
    spec = {"containers": [{"name": "server", "image": "registry.example/server:1"}], **pod_patch}
    labels = {"app": "inference"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "inference"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def _errors(doc: dict[str, Any], crds: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    key = (doc["apiVersion"], doc["kind"])
    if key in crds:
        validator = jsonschema.Draft7Validator(crds[key])
        errors = validator.iter_errors(doc)
        found = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors]
        return found + _metadata_errors(doc)
    found = _k8s_errors(doc)
    if doc["kind"] == "ConfigMap" and "patch.yaml" in (doc.get("data") or {}):
        patch = yaml.safe_load(doc["data"]["patch.yaml"])
        found += [f"patch.yaml: {e}" for e in _k8s_errors(_patched_deployment(patch))]
    return found


def test_crd_files_are_the_stated_prometheus_operator_version() -> None:
    names = sorted(p.name for p in CRDS.glob("*.yaml"))
    assert names == [f"monitoring.coreos.com_{kind}.yaml" for kind in ("prometheusrules", "servicemonitors")]
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert crd["metadata"]["annotations"]["operator.prometheus.io/version"] == "0.93.0"


@pytest.mark.parametrize("mode", [p.stem for p in CI_VALUES] + ["defaults"])
def test_every_manifest_of_every_mode_is_valid_for_kubernetes_and_the_crds(
    mode: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    crds = _crd_schemas()
    docs = rendered[mode]
    assert docs
    problems = {f"{d['kind']}/{d['metadata']['name']}": _errors(d, crds) for d in docs}
    assert not {k: v for k, v in problems.items() if v}, yaml.safe_dump(problems, width=200)


def test_the_validation_rejects_a_misspelt_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """What the fake API server lets through, these schemas catch: one wrong field name per kind."""
    crds = _crd_schemas()
    for doc in rendered["vllm-values"]:
        bad = copy.deepcopy(doc)
        if doc["kind"] == "Deployment":
            bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
        elif doc["kind"] == "ServiceMonitor":
            bad["spec"]["endpoints"][0]["scrapeInterval"] = "15s"  # the field is `interval`
        elif doc["kind"] == "PrometheusRule":
            bad["spec"]["groups"][0]["rules"][0]["expression"] = "up"  # the field is `expr`
        else:
            bad["spec_"] = {}
        assert _errors(bad, crds), f"{doc['kind']}: a misspelt field passed"


def test_dra_is_refused_below_the_kubernetes_version_whose_pod_schema_it_needs() -> None:
    values = yaml.safe_load((CHART / "ci" / "diffusion-values.yaml").read_text(encoding="utf-8"))
    assert values["gpu"]["visibility"] == "dra"
    kube = FakeKube(minor=DRA_MIN_MINOR - 1)
    try:
        with pytest.raises(Exception, match=re.escape("gpu.visibility=dra needs Kubernetes 1.31")):
            render(kube, CHART, values)
    finally:
        kube.close()


def test_crd_schema_conversion_keeps_int_or_string_and_open_maps() -> None:
    schema = _strict(
        {
            "type": "object",
            "properties": {
                "port": {"x-kubernetes-int-or-string": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {}},
            },
        }
    )
    validator = jsonschema.Draft7Validator(schema)
    assert not list(validator.iter_errors({"port": 9464, "labels": {"a": "b"}, "free": {"x": 1}}))
    assert not list(validator.iter_errors({"port": "metrics"}))
    assert list(validator.iter_errors({"port": 1.5}))
    assert list(validator.iter_errors({"prot": 1}))


def test_chart_kube_version_is_what_is_validated() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["kubeVersion"] == ">=1.29.0-0"
    assert K8S_VERSIONS[0] == "1.29.0"
    assert (
        Path(kubernetes_validate.__file__)
        .parent.joinpath("kubernetes-json-schema", f"v{K8S_VERSIONS[-1]}-local-strict")
        .is_dir()
    )
