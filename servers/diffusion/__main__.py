"""``python -m servers.diffusion [serve] --model ...`` (the container's entry point)."""

from __future__ import annotations

import argparse
import sys

from servers.diffusion import cli


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m servers.diffusion", description=cli.__doc__)
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(sys.argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main())
