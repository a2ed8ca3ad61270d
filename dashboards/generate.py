"""Write the committed ops artifacts: the dashboards' JSON, and what the Helm chart derives.

    .venv/bin/python -m dashboards.generate           # write
    .venv/bin/python -m dashboards.generate --check   # exit 1 if anything committed is stale

The dashboards are built in Python with Grafana's own SDK (``grafana-foundation-sdk``) and
written to ``dashboards/<name>.json``. A Helm chart can only read files inside itself, so the
chart holds byte-identical copies of the dashboards and of the alert rules
(``deploy/prometheus/jouletrace-rules.yaml`` is the one source of the rules); this script
writes those copies too. The chart's ``values.schema.json`` is hand-written except
``sidecar.config``, which this script derives from the sidecar's own knob table
(``sidecar.config.KNOBS``: name, type, range, choices, help), so a new knob is a valid Helm
value at once. ``--check`` (and tests/ops) fails on any drift.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards import diagnosis, overview
from sidecar.config import KNOBS, Knob, env_name

__all__ = ["DASHBOARDS", "REPO", "artifacts", "main", "render"]

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "deploy" / "helm" / "jouletrace"
RULES = REPO / "deploy" / "prometheus" / "jouletrace-rules.yaml"
SCHEMA = CHART / "values.schema.json"

DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "jouletrace-overview": overview.build,
    "jouletrace-diagnosis": diagnosis.build,
}


def render(build: Callable[[], Dashboard]) -> str:
    """One dashboard as stable JSON text (sorted keys, two-space indent, trailing newline)."""
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def knob_schema(knob: Knob) -> dict[str, Any]:
    """JSON schema of one sidecar knob as a Helm value (type from its default, range from its parser)."""
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    prop: dict[str, Any] = {
        "type": kinds[type(knob.default)],
        "description": f"{knob.help} (env {env_name(knob.name)}; default {knob.default!r})",
    }
    parser = getattr(knob.cast, "__name__", "")
    if parser.startswith("positive"):
        prop["exclusiveMinimum"] = 0
    elif parser.startswith("non-negative"):
        prop["minimum"] = 0
    elif parser == "_percent":
        prop.update(minimum=0, maximum=100)
    elif parser == "_port":
        prop.update(minimum=0, maximum=65535)
    for bound in ("minimum", "maximum"):  # a parser's own range (sidecar/knobs.py)
        value = getattr(knob.cast, bound, None)
        if value is not None:
            prop[bound] = value
    if knob.choices:
        prop["enum"] = list(knob.choices)
    return prop


def schema_text() -> str:
    """values.schema.json with ``sidecar.config`` derived from the knob table."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    config = schema["properties"]["sidecar"]["properties"]["config"]
    config["properties"] = {knob.name: knob_schema(knob) for knob in KNOBS}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def artifacts() -> dict[Path, str]:
    """Every generated file and the text it must hold."""
    out: dict[Path, str] = {}
    for name, build in DASHBOARDS.items():
        text = render(build)
        out[REPO / "dashboards" / f"{name}.json"] = text
        out[CHART / "dashboards" / f"{name}.json"] = text
    out[CHART / "rules" / RULES.name] = RULES.read_text(encoding="utf-8")
    out[SCHEMA] = schema_text()
    return out


def stale() -> list[Path]:
    """Generated files that are missing or differ from what the generator writes."""
    return [
        path
        for path, text in artifacts().items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        for path in bad:
            print(f"stale: {path.relative_to(REPO)} (run: .venv/bin/python -m dashboards.generate)")
        return 1 if bad else 0
    for path, text in artifacts().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
