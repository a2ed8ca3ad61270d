"""The run beside the study: per task, your J/unit and J/response next to the study's ranges.

Each task's ``study`` block (:func:`loadgen.reference.task_reference`) gives, per GPU,
the study's median and range over its models (minimum-energy configurations); when the
served model and the GPU match one of the study's named results, that figure is shown
too. A figure from a run that is not comparable (:mod:`loadgen.rules`) is shown as the
window's, never as the study's.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadgen.reference import GPUS, SOURCE

__all__ = ["print_study_table", "study_range", "summary_cell"]


def _num(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, int | float) else "-"


def summary_cell(fig: dict[str, Any] | None) -> str:
    """``median [lo-hi]`` (or what of it the study published)."""
    if not fig:
        return "-"
    parts = []
    if "median" in fig:
        parts.append(_num(fig["median"]))
    elif "mean" in fig:
        parts.append(f"mean {_num(fig['mean'])}")
    if "range" in fig:
        lo, hi = fig["range"]
        parts.append(f"[{_num(lo)}-{_num(hi)}]" if lo != hi else f"[{_num(lo)}]")
    return " ".join(parts) or "-"


def study_range(ref: dict[str, Any] | None, gpu: str, key: str = "j_per_unit") -> tuple[float, float] | None:
    """The study's ``(lo, hi)`` of ``key`` on ``gpu``, if published."""
    fig = ((ref or {}).get("gpus", {}).get(gpu) or {}).get(key) or {}
    rng = fig.get("range")
    return (float(rng[0]), float(rng[1])) if rng else None


def _named(ref: dict[str, Any]) -> str:
    named = ref.get("named") or []
    if not named:
        gpu = ref.get("gpu") if ref.get("gpu") in GPUS else "no H100/B200"
        return f"none for {ref.get('served_model') or '?'} on {gpu}"
    return "; ".join(
        f"{n['model']} {n['gpu'].upper()}: {_num(n.get('j_per_unit'))} J/unit"
        + (f" ({n['note']})" if n.get("note") else "")
        for n in named
    )


def print_study_table(data: dict[str, Any], console: Console) -> None:
    """One row per task: yours vs the study's H100 and B200 figures, and the named match."""
    phases = {p["phase"]: p for p in data["phases"]}
    table = Table(
        title=escape("beside the study: your figures and the study's (median [range] over its models)")
    )
    cols = [
        "task",
        "J/unit yours",
        "J/unit H100",
        "J/unit B200",
        "J/resp yours p50",
        "J/resp H100",
        "J/resp B200",
    ]
    for col in [*cols, "named result (served model + GPU)"]:
        table.add_column(col, justify="left" if col.startswith(("task", "named")) else "right")
    for t in data["tasks"]:
        ref = t.get("study")
        if not ref:
            continue
        p = phases.get(t["task"], {})
        mine = p.get("j_per_unit_study")
        label = (
            _num(mine)
            if mine is not None
            else f"{_num(p.get('j_per_unit_window') or t.get('j_per_unit'))} (n/c)"
        )
        gpus = ref.get("gpus", {})
        table.add_row(
            f"{t['task']} (J/{ref['unit']})",
            label,
            *(summary_cell((gpus.get(g) or {}).get("j_per_unit")) for g in GPUS),
            _num((t.get("energy_per_response_j") or {}).get("p50")),
            *(summary_cell((gpus.get(g) or {}).get("j_per_response")) for g in GPUS),
            _named(ref),
        )
    console.print(table)
    console.print("(n/c) = not comparable with the study (see 'vs the study'); shown as the window's figure")
    console.print(f"study figures: {SOURCE}")
