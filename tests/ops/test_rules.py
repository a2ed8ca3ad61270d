"""The alert and recording rules: valid for Prometheus, unit-tested with promtool, documented."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.ops.conftest import REPO, RULES
from tests.ops.promql import operands

ALERTS_DOC = REPO / "docs" / "alerts.md"
RULES_TEST = Path(__file__).with_name("rules_test.yaml")


def _rules() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alerts() -> list[dict[str, object]]:
    return [r for r in _rules() if "alert" in r]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_check_rules_accepts_the_rule_file(promtool: str) -> None:
    result = _run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}{result.stderr}"


def test_promtool_unit_tests_of_every_alert_pass(promtool: str) -> None:
    result = _run([promtool, "test", "rules", str(RULES_TEST)])
    assert result.returncode == 0, f"promtool test rules failed:\n{result.stdout}{result.stderr}"


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))["tests"]
    cases = [case for group in tests for case in group.get("alert_rule_test", [])]
    for alert in _alerts():
        mine = [c for c in cases if c["alertname"] == alert["alert"]]
        assert any(c.get("exp_alerts") for c in mine), f"{alert['alert']}: no promtool case where it fires"
        assert any(not c.get("exp_alerts") for c in mine), f"{alert['alert']}: no case where it stays quiet"


def test_every_alert_has_severity_summary_description_and_a_runbook_section() -> None:
    doc = ALERTS_DOC.read_text(encoding="utf-8")
    headings = {m.group(1).strip() for m in re.finditer(r"^## (.+)$", doc, flags=re.M)}
    for alert in _alerts():
        name = str(alert["alert"])
        labels = alert.get("labels") or {}
        annotations = alert.get("annotations") or {}
        assert isinstance(labels, dict) and labels.get("severity") in {"critical", "warning", "info"}, name
        assert isinstance(annotations, dict)
        assert annotations.get("summary") and annotations.get("description"), name
        url = str(annotations.get("runbook_url", ""))
        assert url.endswith(f"docs/alerts.md#{name.lower()}"), f"{name}: runbook_url {url!r}"
        assert name in headings, f"{name}: no '## {name}' section in docs/alerts.md"
        section = doc.split(f"## {name}", 1)[1].split("\n## ", 1)[0]
        for part in ("What it means", "How to check", "What to do"):
            assert part in section, f"docs/alerts.md, {name}: missing '{part}'"


def test_every_alert_condition_splits_into_queries_the_end_to_end_test_can_run() -> None:
    for alert in _alerts():
        parts = operands(str(alert["expr"]))
        assert parts, alert["alert"]
        for part in parts:
            assert part.count("(") == part.count(")"), f"{alert['alert']}: bad split {part!r}"


def test_operands_split_only_at_top_level_operators() -> None:
    expr = 'sum by (a) (rate(x{p!="idle", q=~"a|b"}[5m])) > 1.2 * y unless on (a) z >= bool 0'
    assert operands(expr) == ['sum by (a) (rate(x{p!="idle", q=~"a|b"}[5m]))', "1.2 * y", "z"]
    assert operands("namespace_model:jouletrace_output_units:rate5m > 0") == [
        "namespace_model:jouletrace_output_units:rate5m"
    ]
