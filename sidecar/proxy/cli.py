"""``jouletrace proxy --upstream URL``: the OpenAI proxy in its own process, beside a sidecar.

The proxy forwards to ``URL`` and tells the sidecar at ``--sidecar`` (the
``proxy_sidecar_url`` knob, default ``http://127.0.0.1:<port>``, the sidecar's ``port`` knob;
its UDP receiver on ``proxy_wire_port``) what each completion did; the sidecar runs as usual
(``jouletrace sidecar``). ``--upstream`` is the short spelling of the
``proxy_upstream`` knob. Every knob is accepted (one config for both processes);
the proxy uses ``proxy_*`` and ``log_level``. The proxy inside the sidecar's
process is ``jouletrace sidecar --proxy-upstream URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from sidecar.config import add_arguments as add_knobs
from sidecar.config import env_name, load_config
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
    parser.add_argument(
        "--sidecar",
        dest="proxy_sidecar_url",
        default=None,
        metavar="URL",
        help="the sidecar's API, e.g. http://127.0.0.1:9464 (= --proxy-sidecar-url)",
    )


def run(args: argparse.Namespace) -> int:
    if not args.proxy_upstream and not os.environ.get(env_name("proxy_upstream")):
        raise ConfigError(
            "proxy_upstream: jouletrace proxy needs --upstream URL (or JOULETRACE_PROXY_UPSTREAM)"
        )
    config = load_config({k: v for k, v in vars(args).items() if k != "command"})
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from sidecar.proxy.loop import run as run_loop
    from sidecar.proxy.process import ProxyProcess

    proxy = ProxyProcess(config)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await proxy.run(stop)

    run_loop(main())
    return 0
