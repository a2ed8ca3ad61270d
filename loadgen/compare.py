"""The regression gate: ``jouletrace loadgen compare BASELINE RUN --max-regression 10%``.

Compares the ``headline`` of two ``results.json`` files (a file, or the folder
holding one). Energy per unit is lower-is-better: a metric regressed when
``(run - baseline) / baseline > max_regression``. Gated metrics: ``j_per_token``,
``j_per_image``, ``j_per_video`` and each task's ``task_j_per_unit``; a metric
missing on either side is listed as not compared, never as passed silently.
Exit status: 0 no regression, 1 at least one regression (each printed), 2 bad input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.errors import InputError

__all__ = ["Comparison", "compare", "load_results", "parse_threshold"]

_TOP = ("j_per_token", "j_per_image", "j_per_video")


def parse_threshold(text: str) -> float:
    """``"10%"`` or ``"0.1"`` -> 0.1."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError as err:
        raise InputError(
            f"--max-regression {text!r}: expected a percentage like 10% or a fraction like 0.1"
        ) from err
    if value < 0:
        raise InputError(f"--max-regression {text!r}: must be >= 0")
    return value


def load_results(path: str | Path) -> dict[str, Any]:
    """A results.json (or a folder with one); errors name the file."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    try:
        data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputError(f"{p}: no such results file") from err
    except json.JSONDecodeError as err:
        raise InputError(f"{p}:{err.lineno}: not valid JSON ({err.msg})") from err
    if not isinstance(data, dict) or not isinstance(data.get("headline"), dict):
        raise InputError(f"{p}: field 'headline': missing; not a jouletrace loadgen results.json")
    return data


@dataclass(frozen=True, slots=True)
class Comparison:
    """One metric, both sides (J per unit) and the relative change (+ = worse)."""

    metric: str
    baseline: float | None
    run: float | None
    change: float | None
    regressed: bool


def _metrics(headline: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {k: headline.get(k) for k in _TOP}
    for task, value in (headline.get("task_j_per_unit") or {}).items():
        out[f"{task}.j_per_unit"] = value
    return out


def compare(baseline: dict[str, Any], run: dict[str, Any], max_regression: float) -> list[Comparison]:
    """Every metric present in either file, in a stable order."""
    b, r = _metrics(baseline["headline"]), _metrics(run["headline"])
    names = list(dict.fromkeys([*b, *r]))
    out = []
    for name in names:
        bv, rv = b.get(name), r.get(name)
        if isinstance(bv, int | float) and isinstance(rv, int | float) and bv > 0:
            change = (rv - bv) / bv
            out.append(Comparison(name, float(bv), float(rv), change, change > max_regression))
        else:
            out.append(Comparison(name, bv, rv, None, False))
    return out


def render(rows: list[Comparison], max_regression: float) -> tuple[str, bool]:
    """Text for the terminal and whether anything regressed."""
    lines = [f"{'metric':34} {'baseline':>12} {'run':>12} {'change':>9}"]
    regressed = False
    for c in rows:
        if c.change is None:
            if c.baseline is None and c.run is None:
                continue
            lines.append(
                f"{c.metric:34} {c.baseline!s:>12} {c.run!s:>12}   not compared (missing on one side)"
            )
            continue
        flag = "  REGRESSION" if c.regressed else ""
        regressed |= c.regressed
        lines.append(f"{c.metric:34} {c.baseline:12.4g} {c.run:12.4g} {100 * c.change:+8.2f}%{flag}")
    worse = [c.metric for c in rows if c.regressed]
    if worse:
        lines.append(f"FAIL: {', '.join(worse)} got worse by more than {100 * max_regression:g}%")
    else:
        lines.append(f"OK: no metric got worse by more than {100 * max_regression:g}%")
    return "\n".join(lines), regressed
