"""Per-task figures from per-request records: energy per response, J/unit, lengths vs targets.

Prompt lengths are compared with their targets as the server counted them
(``usage.prompt_tokens``): ``prompt_vs_target`` is measured / target - 1 for the mean and
the median over the requests whose prompt the loadgen built (multimodal prompts carry
vision tokens the target does not count, so they are left out of the comparison).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from loadgen.records import Result

__all__ = ["pct", "task_summary"]


def pct(values: Sequence[float], qs: Sequence[int] = (50, 90, 99)) -> dict[str, float] | None:
    """Percentiles ``p50``... and ``mean`` of ``values``; ``None`` when empty."""
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs} | {"mean": float(arr.mean())}


def _prompt_lengths(ok: Sequence[Result], multimodal: bool) -> dict[str, Any]:
    pairs = [
        (float(r.request.target_prompt_tokens), float(r.prompt_tokens))
        for r in ok
        if r.prompt_tokens is not None and r.request.target_prompt_tokens is not None
    ]
    target, measured = pct([p[0] for p in pairs]), pct([p[1] for p in pairs])
    out: dict[str, Any] = {"target_prompt_tokens": target, "prompt_tokens": measured}
    if multimodal:
        out["prompt_vs_target"] = None
        out["prompt_note"] = "measured includes vision tokens; the target counts text only"
    elif target and measured:
        out["prompt_vs_target"] = {
            k: measured[k] / target[k] - 1.0 for k in ("mean", "p50") if target[k] > 0
        } | {"exact": sum(1 for t, m in pairs if t == m), "requests": len(pairs)}
    return out


def task_summary(results: Sequence[Result], task: str, unit: str) -> dict[str, Any]:
    """Per-task figures (see the module docstring)."""
    mine = [r for r in results if r.request.task == task]
    ok = [r for r in mine if r.ok]
    out: dict[str, Any] = {
        "task": task,
        "unit": unit,
        "requests": len(mine),
        "ok": len(ok),
        "failed": len(mine) - len(ok),
    }
    if unit == "token":
        out["output_tokens"] = pct([float(r.output_tokens) for r in ok])
        out["target_output_tokens"] = pct([float(r.request.target_output_tokens or 0) for r in mine])
        multimodal = any(
            isinstance(m.get("content"), list) for r in mine for m in r.request.body.get("messages", [])
        )
        out |= _prompt_lengths(ok, multimodal)
    energies = [r for r in ok if r.energy_j is not None]
    out["requests_with_energy"] = len(energies)
    if energies:
        total_e = sum(r.energy_j or 0.0 for r in energies)
        total_u = sum(r.output_units for r in energies)
        out["energy_per_response_j"] = pct([r.energy_j or 0.0 for r in energies])
        out["j_per_unit"] = total_e / total_u if total_u > 0 else None
        out["approximate"] = sum(1 for r in energies if (r.energy or {}).get("approximate"))
        out["not_final"] = sum(1 for r in energies if not (r.energy or {}).get("final"))
        # split before the sidecar's first fit: the warm-up estimate (docs/attribution.md, section 4)
        out["warmup_split"] = sum(1 for r in energies if (r.energy or {}).get("fit_quality") == "warmup")
    return out
