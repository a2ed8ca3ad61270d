"""Diffusion energy the study's way: per timed batch, batch energy / batch size.

The diffusion server answers every request with its batch: id, size (items) and the
pipeline call's start and end (Unix s). Each distinct batch of a phase is one *timed
batch*; its energy is the sidecar's timeline over exactly ``[start, end]``
(``GET /v1/energy``), so idle time between batches and other phases' tails stay out.

- **study figure**: ``sum(batch energy) / sum(batch size)`` over the phase's timed
  batches (with the study's fixed batch size this is the mean of energy / size);
- **per-request sum**: the sidecar's per-request energies of the same batches' members
  over the units they returned.

The two agree when attribution gives a batch's interval energy to its members. A batch
that also served other clients has a size larger than what this run sent: the
per-request sum then counts only this run's members (``foreign_items`` says how many).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from loadgen.records import Result

__all__ = ["TimedBatch", "batch_figures", "measure_batches", "timed_batches"]

IntervalEnergy = Callable[[float, float], Awaitable[tuple[float | None, str]]]


@dataclass(slots=True)
class TimedBatch:
    """One pipeline call of the diffusion server, as its responses described it."""

    id: str
    size: int  # items in the pipeline call
    start_unix_s: float
    end_unix_s: float
    members: list[Result] = field(default_factory=list)
    energy_j: float | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "size": self.size,
            "start_unix_s": self.start_unix_s,
            "end_unix_s": self.end_unix_s,
            "duration_s": self.end_unix_s - self.start_unix_s,
            "members": len(self.members),
            "energy_j": self.energy_j,
            "j_per_unit": self.energy_j / self.size if self.energy_j is not None else None,
            "note": self.note,
        }


def timed_batches(results: Sequence[Result]) -> list[TimedBatch]:
    """The distinct batches of the successful ``results``, by start time."""
    by_id: dict[str, TimedBatch] = {}
    for r in results:
        b = r.batch
        if not r.ok or b is None:
            continue
        tb = by_id.setdefault(
            b["id"], TimedBatch(b["id"], int(b["size"]), float(b["start_unix_s"]), float(b["end_unix_s"]))
        )
        tb.members.append(r)
    return sorted(by_id.values(), key=lambda t: t.start_unix_s)


async def measure_batches(batches: Sequence[TimedBatch], energy: IntervalEnergy) -> None:
    """Fill each batch's ``energy_j`` (or ``note``) from ``energy(start_unix_s, end_unix_s)``."""
    for tb in batches:
        tb.energy_j, tb.note = await energy(tb.start_unix_s, tb.end_unix_s)


def batch_figures(batches: Sequence[TimedBatch]) -> dict[str, Any]:
    """The phase's figures by timed batch (see the module docstring); energies J."""
    known = [tb for tb in batches if tb.energy_j is not None]
    energy = sum(tb.energy_j or 0.0 for tb in known)
    items = sum(tb.size for tb in known)
    members = [r for tb in known for r in tb.members]
    with_energy = [r for r in members if r.energy_j is not None]
    per_req = sum(r.energy_j or 0.0 for r in with_energy) if with_energy else None
    units = sum(r.output_units for r in with_energy)
    out: dict[str, Any] = {
        "method": "per timed batch: batch energy (sidecar timeline over the pipeline call) / batch size",
        "timed_batches": [tb.to_json() for tb in batches],
        "batches_measured": len(known),
        "batches_unmeasured": len(batches) - len(known),
        "window_energy_j": energy if known else None,
        "window_units": float(items),
        "j_per_unit_study": energy / items if items else None,
        "foreign_items": items - int(sum(r.output_units for r in members)),
        "per_request_sum_j": per_req,
        "j_per_unit_per_request_sum": per_req / units if per_req is not None and units > 0 else None,
    }
    busy_s = sum(tb.end_unix_s - tb.start_unix_s for tb in known)
    out["avg_power_w"] = energy / busy_s if known and busy_s > 0 else None
    out["throughput_units_per_s"] = items / busy_s if busy_s > 0 else None
    out["units_per_j"] = items / energy if energy > 0 else None
    out["window_idle_j"] = None  # batches are timed exactly: no idle inside
    out["per_request_plus_idle_vs_study"] = None
    study, mine = out["j_per_unit_study"], out["j_per_unit_per_request_sum"]
    out["per_request_vs_study"] = mine / study - 1.0 if study and mine is not None else None
    return out
