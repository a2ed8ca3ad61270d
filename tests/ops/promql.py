"""Just enough PromQL text handling for the ops tests: substitute Grafana's variables, and split
an alert expression at its top-level condition operators into the queries it is made of.

The split follows the convention documented at the top of deploy/prometheus/jouletrace-rules.yaml:
an alert is ``core <comparison> threshold`` joined by ``and`` / ``unless`` / ``or``. Each operand
must return data on a healthy, busy deployment; the condition as a whole returns data only when
the alert fires, so the end-to-end test queries the operands (and the whole expression for
errors).
"""

from __future__ import annotations

import re

__all__ = ["grafana_to_promql", "operands"]

# What Grafana substitutes before a query reaches Prometheus, for an "All" selection.
_GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$namespace": ".*",
    "$model": ".*",
    "$pod": ".*",
}

_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_SET_OPS = ("and", "unless", "or")
_MODIFIER = re.compile(r"^\s*(bool\b|(on|ignoring|group_left|group_right)\s*(\([^)]*\))?)")
_NUMBER = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's template variables by what an 'All' selection sends (longest names first)."""
    for name in sorted(_GRAFANA_VARS, key=len, reverse=True):
        expr = expr.replace(name, _GRAFANA_VARS[name])
    if "$" in expr:
        raise ValueError(f"unsubstituted Grafana variable in: {expr}")
    return expr


def _split_top_level(expr: str) -> list[str]:
    """Split at comparison and set operators outside (), [], {} and strings."""
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    i = 0
    while i < len(expr):
        ch = expr[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            op = next((c for c in _COMPARISONS if expr.startswith(c, i)), None)
            if op is None:
                word = re.match(r"[a-z_]+", expr[i:])
                before_ok = i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] in "_:")
                if word and word.group(0) in _SET_OPS and before_ok:
                    op = word.group(0)
            if op is not None:
                parts.append(expr[start:i])
                i += len(op)
                start = i
                continue
        i += 1
    parts.append(expr[start:])
    return parts


def _strip_modifiers(part: str) -> str:
    while True:
        m = _MODIFIER.match(part)
        if not m or not m.group(0).strip():
            return part.strip()
        part = part[m.end() :]


def operands(expr: str) -> list[str]:
    """The non-constant operands of the top-level condition operators of ``expr``."""
    out = []
    for part in _split_top_level(expr):
        query = _strip_modifiers(part)
        if query and not _NUMBER.match(query):
            out.append(query)
    return out
