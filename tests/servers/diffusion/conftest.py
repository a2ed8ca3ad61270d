"""Tiny image and video pipelines, built once per test session with ``jouletrace models build``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers.diffusion.procs import REPO


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kind -> folder; reuses ``$JOULETRACE_MODELS_DIR/tiny-<kind>`` when set (the builders cache)."""
    root = Path(os.environ["JOULETRACE_MODELS_DIR"]) if "JOULETRACE_MODELS_DIR" in os.environ else None
    root = root or tmp_path_factory.mktemp("models")
    out = {}
    for kind in ("image", "video"):
        folder = root / f"tiny-{kind}"
        subprocess.run(
            [sys.executable, "-m", "sidecar.cli", "models", "build", kind, "--out", str(folder)],
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=300,
        )
        out[kind] = folder
    return out
