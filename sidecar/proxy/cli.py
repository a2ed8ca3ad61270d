"""``jouletrace proxy --upstream URL``: the sidecar with its OpenAI proxy in front of ``URL``.

The same process as ``jouletrace sidecar --proxy-upstream URL`` (every sidecar
knob applies: ``--meter``, ``--port``, ``--proxy-port`` ...); ``--upstream`` is
the short spelling of the ``proxy_upstream`` knob.
"""

from __future__ import annotations

import argparse
import os

from sidecar import cli_sidecar
from sidecar.config import add_arguments as add_knobs
from sidecar.config import env_name
from sidecar.errors import ConfigError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_knobs(parser)
    parser.add_argument(
        "--upstream",
        dest="proxy_upstream",
        default=None,
        metavar="URL",
        help="the OpenAI-compatible server to proxy, e.g. http://localhost:8000 (= --proxy-upstream)",
    )


def run(args: argparse.Namespace) -> int:
    if not args.proxy_upstream and not os.environ.get(env_name("proxy_upstream")):
        raise ConfigError(
            "proxy_upstream: jouletrace proxy needs --upstream URL (or JOULETRACE_PROXY_UPSTREAM)"
        )
    return cli_sidecar.run(args)
