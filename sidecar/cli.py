"""The ``jouletrace`` command: one entry point, one subcommand per job.

    jouletrace sidecar [--meter nvml ...]   run the sidecar (every knob: --help)
    jouletrace proxy --upstream URL         an OpenAI proxy in front of URL, feeding a sidecar
    jouletrace demo                         the CPU demo: sidecar + simulated GPU + short workload
    jouletrace models build ...             tiny offline models (servers/models)
    jouletrace vllm serve ...               vLLM with jouletrace attached (servers/vllm)
    jouletrace diffusion serve ...          the diffusion server (servers/diffusion)
    jouletrace loadgen ...                  the study's task mixes (loadgen)

Each subcommand lives in its own module, imported only when it runs (the
sidecar never imports torch): the module has ``add_arguments(parser)`` and
``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from sidecar.errors import JouletraceError

__all__ = ["COMMANDS", "main"]

# command -> (help, module with add_arguments(parser) and run(args) -> int)
COMMANDS: dict[str, tuple[str, str]] = {
    "sidecar": ("run the sidecar next to an inference server", "sidecar.cli_sidecar"),
    "proxy": ("an OpenAI-compatible proxy in front of an engine, feeding the sidecar", "sidecar.proxy.cli"),
    "demo": ("CPU demo: the sidecar on a simulated GPU with a short workload", "sidecar.cli_demo"),
    "models": ("build tiny offline models (LLM, image, video)", "servers.models.cli"),
    "vllm": ("start vLLM with jouletrace attached", "servers.vllm.cli"),
    "diffusion": ("serve text-to-image / text-to-video with batch spans", "servers.diffusion.cli"),
    "loadgen": ("replay the study's task mixes and report energy", "loadgen.cli"),
    "attribute": (
        "re-attribute a recorded run (counter CSV + iteration stream) offline",
        "sidecar.cli_attribute",
    ),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its package is not there (e.g. servers/ in a sidecar-only image)
        return False


def _available() -> dict[str, tuple[str, str]]:
    return {name: entry for name, entry in COMMANDS.items() if _installed(entry[1])}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jouletrace`` console script."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    commands = _available()
    parser = argparse.ArgumentParser(prog="jouletrace", description="Where do our joules go?")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = args_in[0] if args_in and args_in[0] in commands else None
    for name, (help_text, module_name) in commands.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sub_parser)
    args = parser.parse_args(args_in)
    module = importlib.import_module(commands[args.command][1])
    try:
        code: int = module.run(args)
        return code
    except JouletraceError as err:
        print(f"jouletrace: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
