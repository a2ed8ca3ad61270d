"""A benchmark script (``benchmarks/NAME.py``) loaded as a module, as the tests of its parts need it, or
run in its own process, as the tests of its whole run need it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_bench(name: str, module_name: str | None = None) -> ModuleType:
    """``benchmarks/{name}.py`` as a module (registered under ``module_name``, default ``name``; with
    the folder on ``sys.path``, as when the script runs, for the benchmark modules it imports)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(module_name or name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def run_bench(
    name: str,
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 90,
) -> str:
    """``benchmarks/{name}.py args`` run as users run it (its own process, the repository importable,
    ``env`` over this one's), from ``cwd`` (the repository's root by default); its standard output,
    once it exited 0 (else the test fails with both its outputs)."""
    cmd = [sys.executable, str(BENCHMARKS / f"{name}.py"), *args]
    environ = {**os.environ, "PYTHONPATH": str(BENCHMARKS.parent), **(env or {})}
    run = subprocess.run(
        cmd, cwd=cwd or BENCHMARKS.parent, env=environ, capture_output=True, text=True, timeout=timeout_s
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout
