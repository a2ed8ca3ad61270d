"""A benchmark script (``benchmarks/NAME.py``) loaded as a module, as the tests of its parts need it."""

from __future__ import annotations

import importlib.util
import sys
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
