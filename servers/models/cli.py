"""``jouletrace models build KIND --out DIR``: build a tiny offline model.

A registry of builders: :data:`BUILDERS` maps a kind (``llama``, ``qwen``; the
diffusion models add ``image``/``video`` from their own module, listed in
:data:`PROVIDERS`) to ``build(out_dir) -> out_dir``. Each builder writes a
folder that its server loads with ``from_pretrained`` and is idempotent: a
folder that is already complete is returned as is.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["BUILDERS", "PROVIDERS", "add_arguments", "builders", "default_dir", "run"]

Builder = Callable[[Path], Path]

# Built-in builders (servers.models.llm): kind -> builder.
BUILDERS: dict[str, Builder] = {}

# Modules that register more builders when imported: each has a ``BUILDERS`` dict
# (kind -> builder). Missing modules are skipped, so a slim image still works.
PROVIDERS: tuple[str, ...] = (
    "servers.models.llm",
    "servers.models.vlm",
    "servers.models.diffusion",
    "servers.models.video",
)


def builders() -> dict[str, Builder]:
    """Every builder available in this environment, by kind."""
    out = dict(BUILDERS)
    for name in PROVIDERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                continue  # the provider itself is not there
            raise
        out.update(getattr(module, "BUILDERS", {}))
    return out


def default_dir(kind: str) -> Path:
    """Where a model of ``kind`` is cached: ``$JOULETRACE_MODELS_DIR/tiny-<kind>``.

    Default ``~/.cache/jouletrace/models``: outside the repository, shared by its checkouts.
    """
    root = os.environ.get("JOULETRACE_MODELS_DIR") or Path.home() / ".cache" / "jouletrace" / "models"
    return Path(root) / f"tiny-{kind}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    build = sub.add_parser("build", help="build a tiny offline model (cached: a complete folder is kept)")
    build.add_argument(
        "kind",
        help="model kind: llama, qwen (LLMs); vlm (image chat); image, video (Wan), cogvideox (diffusion)",
    )
    build.add_argument(
        "--out", type=Path, default=None, help="output folder (default ~/.cache/jouletrace/models/tiny-KIND)"
    )


def run(args: argparse.Namespace) -> int:
    table = builders()
    if args.kind not in table:
        print(f"unknown model kind {args.kind!r}; available: {', '.join(sorted(table))}")
        return 2
    out = args.out if args.out is not None else default_dir(args.kind)
    print(table[args.kind](Path(out)))
    return 0
