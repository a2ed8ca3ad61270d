"""Real Helm for the chart tests, through ``helm-sdkpy`` (Helm's Go library, in-process).

helm-sdkpy offers ``Lint`` (chart path only: no values argument) and ``Install`` (needs a
cluster), but no ``template``. So:

- :func:`lint` copies the chart, writes the CI values file coalesced over the chart's
  values.yaml into the copy (what ``helm lint -f ci.yaml`` lints), and runs Helm's linter.
  Helm's lint messages lose their text through helm-sdkpy's JSON (a Go ``error`` marshals
  to ``{}``): only severity and path survive, so a failing lint is re-run through
  :func:`render`, whose errors carry Helm's own message.
- :func:`render` runs a real ``helm install`` (rendering, schema validation, manifest
  parsing, resource mapping: all Helm's) against :class:`FakeKube`, a minimal Kubernetes API
  server that knows the kinds the chart uses and accepts every create. The rendered
  manifests come back as dicts.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}

# group/version path -> (groupVersion, [(resource, kind, namespaced)])
_RESOURCES: dict[str, tuple[str, list[tuple[str, str, bool]]]] = {
    "/api/v1": (
        "v1",
        [
            ("configmaps", "ConfigMap", True),
            ("services", "Service", True),
            ("serviceaccounts", "ServiceAccount", True),
            ("secrets", "Secret", True),
            ("pods", "Pod", True),
            ("namespaces", "Namespace", False),
        ],
    ),
    "/apis/apps/v1": ("apps/v1", [("deployments", "Deployment", True)]),
    "/apis/monitoring.coreos.com/v1": (
        "monitoring.coreos.com/v1",
        [("servicemonitors", "ServiceMonitor", True), ("prometheusrules", "PrometheusRule", True)],
    ),
}


class FakeKube:
    """A Kubernetes API server just real enough for ``helm install``: discovery, 404 on every
    read (nothing exists yet), 201 on every create. It stores nothing."""

    def __init__(self, minor: int = 31) -> None:
        """``minor``: the Kubernetes 1.x version the server reports (Helm's .Capabilities.KubeVersion)."""
        handler = _handler(minor)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def kubeconfig(self) -> str:
        port = self._server.server_address[1]
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "fake", "user": {"token": "fake"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(minor: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, code: int, obj: dict[str, Any]) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/version":
                return self._send(200, {"major": "1", "minor": str(minor), "gitVersion": f"v1.{minor}.0"})
            if path == "/api":
                return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
            if path == "/apis":
                groups = []
                for gv, _ in _RESOURCES.values():
                    if "/" in gv:
                        group, version = gv.split("/")
                        ref = {"groupVersion": gv, "version": version}
                        groups.append({"name": group, "versions": [ref], "preferredVersion": ref})
                return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
            if path in _RESOURCES:
                gv, resources = _RESOURCES[path]
                verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
                return self._send(
                    200,
                    {
                        "kind": "APIResourceList",
                        "groupVersion": gv,
                        "resources": [
                            {"name": n, "singularName": "", "namespaced": ns, "kind": k, "verbs": verbs}
                            for n, k, ns in resources
                        ],
                    },
                )
            if path.endswith("/secrets"):  # Helm's release storage: no releases yet
                empty = {"kind": "SecretList", "apiVersion": "v1", "items": [], "metadata": {}}
                return self._send(200, empty)
            return self._send(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})

        def _echo(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            try:
                obj = json.loads(body)
            except ValueError:  # protobuf (Helm's release Secret): nothing to echo
                obj = {}
            self._send(201, obj)

        do_POST = _echo
        do_PUT = _echo
        do_PATCH = _echo

    return Handler


def _isolate_helm_home() -> None:
    """Keep Helm's cache/config/data out of $HOME (read when the Go library loads)."""
    home = Path(tempfile.gettempdir()) / "jouletrace-tests-helm"
    for kind in ("cache", "config", "data"):
        os.environ.setdefault(f"HELM_{kind.upper()}_HOME", str(home / kind))


def coalesce(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's values coalescing: maps merge key by key, anything else replaces, null deletes."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = coalesce(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def lint(chart: Path, values: dict[str, Any]) -> list[tuple[str, str]]:
    """Helm's linter on ``chart`` with ``values`` over its defaults: (severity, path) per message."""
    _isolate_helm_home()
    import helm_sdkpy

    with tempfile.TemporaryDirectory() as tmp:
        copy_dir = Path(tmp) / chart.name
        shutil.copytree(chart, copy_dir)
        defaults = yaml.safe_load((chart / "values.yaml").read_text(encoding="utf-8"))
        merged = coalesce(defaults, values)
        (copy_dir / "values.yaml").write_text(yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
        result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(str(copy_dir)))
    messages = result.get("Messages") or []
    return [(SEVERITY.get(m["Severity"], str(m["Severity"])), m["Path"]) for m in messages]


def render(kube: FakeKube, chart: Path, values: dict[str, Any], release: str = "rel") -> list[dict[str, Any]]:
    """``helm install`` against the fake API server; the rendered manifests, in Helm's order.

    Raises ``helm_sdkpy.HelmError`` with Helm's message if rendering or validation fails.
    """
    _isolate_helm_home()
    import helm_sdkpy

    config = helm_sdkpy.Configuration(namespace="ml", kubeconfig=kube.kubeconfig)
    release_info = asyncio.run(
        helm_sdkpy.Install(config).run(release, str(chart), values=values or None, wait=False, timeout=30)
    )
    return [doc for doc in yaml.safe_load_all(release_info["manifest"]) if doc]
