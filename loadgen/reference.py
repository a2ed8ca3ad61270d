"""The study's published figures, to put beside a run: per task and GPU, and named models.

Source: ``loadgen/data/published.yaml``, a copy of the published figures of "Where Do
the Joules Go? Diagnosing Inference Energy Consumption" (Chung, Wu, Ma, Chowdhury;
arXiv 2601.22076; ML.ENERGY Leaderboard v3.0), shipped with the package so an installed
loadgen needs nothing else. GPU energy only, each model's minimum-energy configuration.

:func:`task_reference` gives, for one task, per GPU (``h100``, ``b200``): J per unit
(token, image, video) and J per response as ``{median, mean, range: [lo, hi]}`` where
the study published them; for Code Completion and the diffusion tasks, which the study
published per model, the range over its models and the per-model figures. ``named``
lists the study's results for the *served* model on the *same* GPU (e.g. Llama-3.1-8B
chat on one H100: 0.070 J/token); empty when either does not match.

Matching: a study model name matches a served name when every word of the study name
(split at ``-``, ``_``, ``/`` and spaces, case-insensitive) is a word of the served name
(``Llama-3.1-8B-Instruct`` matches ``meta-llama/Llama-3.1-8B-Instruct``; ``CogVideoX-2B``
matches ``THUDM/CogVideoX-2b``). A GPU matches by family (``NVIDIA H100 80GB HBM3`` is
``h100``).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

import yaml

__all__ = ["GPUS", "SOURCE", "gpu_family", "model_matches", "published", "task_reference"]

GPUS = ("h100", "b200")
SOURCE = (
    "Chung, Wu, Ma, Chowdhury, 'Where Do the Joules Go? Diagnosing Inference Energy Consumption', "
    "arXiv 2601.22076; ML.ENERGY Leaderboard v3.0 (loadgen/data/published.yaml)"
)
_DIFFUSION_UNIT = {"text-to-image": "image", "text-to-video": "video"}


@cache
def published() -> dict[str, Any]:
    """The shipped ``published.yaml``, parsed."""
    text = resources.files("loadgen").joinpath("data/published.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def gpu_family(name: str) -> str:
    """``h100`` / ``b200`` from a device name ('' when it is neither)."""
    low = name.lower()
    return next((g for g in GPUS if g in low), "")


def _words(name: str) -> list[str]:
    name = re.sub(r"\(.*?\)", "", name)
    return [w for w in re.split(r"[-_/\s]+", name.lower()) if w]


def model_matches(study_name: str, served: str) -> bool:
    """True when every word of ``study_name`` is a word of ``served`` (see the module docstring)."""
    want, have = _words(study_name), set(_words(served))
    return bool(want) and bool(served) and all(w in have for w in want)


def _span(values: list[float]) -> dict[str, Any]:
    return {"range": [min(values), max(values)]} if values else {}


def _llm_gpu(block: dict[str, Any]) -> dict[str, Any]:
    if "models" not in block:
        return {
            "j_per_unit": dict(block.get("j_per_token", {})),
            "j_per_response": dict(block.get("j_per_response", {})),
        }
    models = {str(k): v for k, v in block["models"].items()}
    return {
        "j_per_unit": _span([float(v["j_per_token"]) for v in models.values()]),
        "j_per_response": _span([float(v["j_per_response"]) for v in models.values()]),
        "models": {
            k: {"j_per_unit": v["j_per_token"], "j_per_response": v["j_per_response"]}
            for k, v in models.items()
        },
    }


def _diffusion_gpu(block: dict[str, Any]) -> dict[str, Any]:
    models = {str(k): float(v) for k, v in block.items()}
    span = _span(list(models.values()))
    return {
        "j_per_unit": span,
        "j_per_response": dict(span),  # one image / video per response
        "models": {k: {"j_per_unit": v, "j_per_response": v} for k, v in models.items()},
    }


def _named(task: str, per_gpu: dict[str, dict[str, Any]], model: str, gpu: str) -> list[dict[str, Any]]:
    if not model or gpu not in GPUS:
        return []
    out: list[dict[str, Any]] = []
    for r in published().get("named_llm_results", []):
        if (
            r.get("task") == task
            and str(r.get("gpu", "")).lower() == gpu
            and model_matches(str(r["model"]), model)
        ):
            entry = {"model": r["model"], "gpu": gpu, "gpus": r.get("gpus", 1)}
            if "j_per_token" in r:
                entry |= {"j_per_unit": r["j_per_token"], "j_per_response": r.get("j_per_response")}
            if "note" in r:
                entry["note"] = r["note"]
            out.append(entry)
    for name, fig in (per_gpu.get(gpu, {}).get("models") or {}).items():
        if model_matches(name, model):
            out.append({"model": name, "gpu": gpu, **fig})
    return out


def task_reference(task: str, *, model: str = "", gpu: str = "") -> dict[str, Any] | None:
    """The study's figures for ``task`` (see the module docstring); ``None`` for an unknown task.

    ``model`` is the served model's name, ``gpu`` a device name or family; both may be ''.
    """
    data = published()
    unit = _DIFFUSION_UNIT.get(task, "token")
    if task in data.get("per_task_min_energy", {}):
        per_gpu = {g: _llm_gpu(b) for g, b in data["per_task_min_energy"][task].items()}
    elif task in data.get("diffusion_min_energy", {}):
        per_gpu = {g: _diffusion_gpu(b) for g, b in data["diffusion_min_energy"][task].items()}
    else:
        return None
    family = gpu_family(gpu) or gpu.lower()
    return {
        "task": task,
        "unit": unit,
        "gpus": per_gpu,
        "named": _named(task, per_gpu, model, family),
        "served_model": model,
        "gpu": family,
        "source": SOURCE,
    }
