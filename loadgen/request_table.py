"""A few requests per task, each with the joules the sidecar attributed to it.

The report's table shows per-task aggregates; this one shows what a client can
look up for its own request id (``GET /v1/requests/{id}`` on the sidecar),
labelled with where the energy came from (``measured``, ``estimate``, ...).
Energies in J; J/unit is per output token, image or video.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from loadgen.records import Result

__all__ = ["print_requests"]


def _units(r: Result) -> str:
    if r.request.unit == "token":
        return f"{r.prompt_tokens or '?'} in / {r.output_tokens} out"
    return f"{r.output_units:g} {r.request.unit}(s)"


def print_requests(results: Sequence[Result], console: Console, per_task: int = 2) -> None:
    """Print up to ``per_task`` finished requests of each task with their energy record."""
    table = Table(title="per-request energy (from the sidecar, by the X-Request-Id the client sent)")
    for col in ("request id", "task", "work", "energy J", "prefill J", "decode J", "J/unit", "source"):
        table.add_column(col, justify="left" if col in ("request id", "task", "work", "source") else "right")
    shown: dict[str, int] = {}
    for r in results:
        e = r.energy or {}
        if not r.ok or not e.get("final") or shown.get(r.request.task, 0) >= per_task:
            continue
        shown[r.request.task] = shown.get(r.request.task, 0) + 1
        phases = e.get("phase_j") or {}
        per_unit = e.get("joules_per_output_unit")
        source = str(e.get("energy_source", "?")) + (" ~approx" if e.get("approximate") else "")
        table.add_row(
            r.request.id,
            r.request.task,
            _units(r),
            f"{e['energy_j']:.3f}",
            f"{phases.get('prefill', 0.0):.3f}",
            f"{phases.get('decode', 0.0) + phases.get('denoise', 0.0):.3f}",
            f"{per_unit:.4f}" if isinstance(per_unit, float) else "-",
            source,
        )
    console.print(table)
