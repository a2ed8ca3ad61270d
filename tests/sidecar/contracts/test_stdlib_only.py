"""Every module in sidecar.contracts imports with the standard library alone.

The vLLM plugin, the diffusion server and the load generator import these
modules in their own processes (and images); a third-party import here would
drag the sidecar's dependencies along. Each module is imported in a fresh
interpreter, which then lists what it loaded.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import sidecar.contracts

REPO = Path(__file__).resolve().parents[3]
MODULES = sorted(f"sidecar.contracts.{m.name}" for m in pkgutil.iter_modules(sidecar.contracts.__path__))


def _ours(name: str) -> bool:
    """The contracts package, its modules and its (empty) parent package."""
    return name in ("sidecar", "sidecar.contracts") or name.startswith("sidecar.contracts.")


_PROBE = """
import json, sys
before = set(sys.modules)
import {module}
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def _loaded_by(module: str) -> list[str]:
    code = _PROBE.format(module=module)
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(REPO)!r})\n{code}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def test_the_package_lists_its_modules() -> None:
    assert {
        "sidecar.contracts.ports",
        "sidecar.contracts.span_attributes",
        "sidecar.contracts.vllm_wire",
    } <= set(MODULES)


@pytest.mark.parametrize("module", ["sidecar.contracts", *MODULES])
def test_imports_only_the_standard_library(module: str) -> None:
    loaded = _loaded_by(module)
    assert module in loaded  # the probe really imported it
    foreign = [
        name for name in loaded if name.split(".")[0] not in sys.stdlib_module_names and not _ours(name)
    ]
    assert foreign == [], f"{module} pulls in non-stdlib modules: {foreign}"


@pytest.mark.parametrize("module", ["sidecar.contracts", *MODULES])
def test_loads_no_other_part_of_the_sidecar(module: str) -> None:
    ours = [name for name in _loaded_by(module) if name.startswith("sidecar.") and not _ours(name)]
    assert ours == []
