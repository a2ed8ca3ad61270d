"""The regression gate: ``jouletrace loadgen compare BASELINE RUN --max-regression 10%``.

Compares the ``headline`` of two ``results.json`` files (a file, or the folder
holding one). Energy per unit is lower-is-better: a metric regressed when
``(run - baseline) / baseline > max_regression``. Gated metrics: ``j_per_token``,
``j_per_image``, ``j_per_video`` and each task's ``task_j_per_unit``; a metric
missing (or null) on either side is listed as not compared, never as passed silently.
A figure present must be a finite number > 0 (J per unit): NaN, Infinity, 0, a negative
number or ``true`` is refused naming the file and field (a change from or to it means nothing).
Exit status: 0 no regression, 1 at least one regression (each printed), 2 bad input or
nothing compared (no metric has a figure on both sides: the gate cannot pass on nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.errors import InputError
from loadgen.records import finite_j
from loadgen.user_files import loads, read_text

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
    if not 0 <= value < math.inf:
        raise InputError(f"--max-regression {text!r}: must be a finite number >= 0")
    return value


def load_results(path: str | Path) -> dict[str, Any]:
    """A results.json (or a folder with one), its headline checked; errors name the file."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    data = loads(read_text(p, "results file"), str(p))
    if not isinstance(data, dict) or not isinstance(data.get("headline"), dict):
        raise InputError(f"{p}: field 'headline': missing; not a jouletrace loadgen results.json")
    _check_figures(str(p), data["headline"])
    return data


def _check_figures(path: str, headline: dict[str, Any]) -> None:
    tasks = headline.get("task_j_per_unit")
    if tasks is not None and not isinstance(tasks, dict):
        raise InputError(f"{path}: field 'headline.task_j_per_unit': expected an object {{task: J per unit}}")
    for name, value in _metrics(headline).items():
        if value is not None and _figure(value) is None:
            raise InputError(
                f"{path}: headline {name!r}: expected a finite number > 0 (J per unit) or null, "
                f"got {repr(value)[:40]}"
            )


def _figure(value: Any) -> float | None:
    """J per unit when ``value`` is a finite number > 0, else None (0 J/unit: nothing measured)."""
    joules = finite_j(value)
    return joules if joules else None


@dataclass(frozen=True, slots=True)
class Comparison:
    """One metric, both sides (J per unit) and the relative change (+ = worse)."""

    metric: str
    baseline: float | None
    run: float | None
    change: float | None
    regressed: bool


def _metrics(headline: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: headline.get(k) for k in _TOP}
    for task, value in (headline.get("task_j_per_unit") or {}).items():
        out[f"{task}.j_per_unit"] = value
    return out


def compare(baseline: dict[str, Any], run: dict[str, Any], max_regression: float) -> list[Comparison]:
    """Every metric present in either file, in a stable order."""
    b, r = _metrics(baseline["headline"]), _metrics(run["headline"])
    names = list(dict.fromkeys([*b, *r]))
    out = []
    for name in names:
        bv, rv = _figure(b.get(name)), _figure(r.get(name))
        if bv is not None and rv is not None:
            change = (rv - bv) / bv
            out.append(Comparison(name, bv, rv, change, change > max_regression))
        else:
            out.append(Comparison(name, bv, rv, None, False))
    return out


def render(rows: list[Comparison], max_regression: float) -> tuple[str, int]:
    """Text for the terminal and the exit status: 0 OK, 1 regressed, 2 nothing compared."""
    lines = [f"{'metric':34} {'baseline':>12} {'run':>12} {'change':>9}"]
    for c in rows:
        if c.change is None:
            if c.baseline is None and c.run is None:
                continue
            lines.append(
                f"{c.metric:34} {c.baseline!s:>12} {c.run!s:>12}   not compared (missing on one side)"
            )
            continue
        flag = "  REGRESSION" if c.regressed else ""
        lines.append(f"{c.metric:34} {c.baseline:12.4g} {c.run:12.4g} {100 * c.change:+8.2f}%{flag}")
    worse = [c.metric for c in rows if c.regressed]
    if worse:
        lines.append(f"FAIL: {', '.join(worse)} got worse by more than {100 * max_regression:g}%")
        return "\n".join(lines), 1
    if all(c.change is None for c in rows):
        lines.append("FAIL: nothing compared: no metric has a figure in both files")
        return "\n".join(lines), 2
    lines.append(f"OK: no metric got worse by more than {100 * max_regression:g}%")
    return "\n".join(lines), 0
