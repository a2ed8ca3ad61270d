"""The Grafana dashboards: committed JSON matches its generator; panels are well-formed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dashboards import generate
from tests.ops.conftest import REPO
from tests.ops.promql import grafana_to_promql

DASHBOARD_FILES = sorted((REPO / "dashboards").glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels") or [])
    return out


def test_committed_json_and_chart_copies_match_the_generator() -> None:
    stale = [str(p.relative_to(REPO)) for p in generate.stale()]
    assert not stale, f"regenerate with `.venv/bin/python -m dashboards.generate`; stale: {stale}"


def test_the_generator_writes_overview_and_diagnosis() -> None:
    assert [p.name for p in DASHBOARD_FILES] == ["jouletrace-diagnosis.json", "jouletrace-overview.json"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_template_variables_are_datasource_namespace_model_pod(path: Path) -> None:
    variables = {v["name"]: v for v in _load(path)["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "model", "pod"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "model", "pod"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*", name


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_panels_have_unique_ids_and_query_the_datasource_variable(path: Path) -> None:
    dashboard = _load(path)
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    for panel in panels(dashboard):
        targets = panel.get("targets") or []
        if panel["type"] in ("row", "text"):
            assert not targets
            continue
        assert targets, f"{panel['title']}: no query"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        ref_ids = [t["refId"] for t in targets]
        assert len(set(ref_ids)) == len(ref_ids) and all(ref_ids), panel["title"]
        for target in targets:
            grafana_to_promql(target["expr"])  # only variables an "All" selection can fill


def test_energy_panels_show_the_energy_source() -> None:
    """An estimate must look like one: every J/token and power series names its energy source."""
    dashboard = _load(REPO / "dashboards" / "jouletrace-overview.json")
    for panel in panels(dashboard):
        if panel["title"] in ("J per output token", "GPU power", "Power by phase"):
            legends = [t.get("legendFormat", "") for t in panel["targets"]]
            assert "{{energy_source}}" in legends[0], panel["title"]
            matchers = [o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]]
            assert ".*estimate.*" in matchers, panel["title"]
