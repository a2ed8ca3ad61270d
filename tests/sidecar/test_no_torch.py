"""The sidecar never imports torch (it runs in a slim container next to the server)."""

from __future__ import annotations

from tests.support import python_prints


def test_importing_every_sidecar_module_pulls_in_no_torch_and_no_diffusers() -> None:
    code = (
        "import pkgutil, importlib, sys, sidecar\n"
        "for m in pkgutil.walk_packages(sidecar.__path__, 'sidecar.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'diffusers', 'transformers'))\n"
        "print(','.join(bad))\n"
    )
    assert python_prints(code) == ""
