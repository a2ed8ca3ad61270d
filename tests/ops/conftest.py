"""Shared fixtures of the ops tests: where things are, and the real tools they drive."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "jouletrace-rules.yaml"
CHART = REPO / "deploy" / "helm" / "jouletrace"


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of Prometheus's promtool (Debian package ``prometheus``; scripts/install-system-deps.sh)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run scripts/install-system-deps.sh (Debian package 'prometheus')")
    return path
