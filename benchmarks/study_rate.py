"""How many vLLM request spans a second the study's busiest GPUs would send a sidecar: an estimate.

From the study's published figures (``loadgen/data/published.yaml``, :func:`loadgen.reference.published`),
per GPU family: the highest steady-state power any LLM configuration drew (``gpu_power_w``, the top
of its range) over the lowest energy per response any LLM task's minimum-energy configuration
published (``per_task_min_energy``: the bottom of each task's range, and each per-model figure
divided by the GPUs it ran on). Power / (J per response) is responses per second; no configuration
the study published draws both at once, so this is above any of them: an upper estimate, not a
measurement. vLLM exports one ``llm_request`` span per response; a client traced as the load
generator traces it adds one more.

:func:`for_scale` is the line ``ingest_grpc.py`` prints: its measured rate against this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from loadgen.reference import published

__all__ = ["NODE_GPUS", "StudyRate", "for_scale", "study_rate"]

NODE_GPUS = 8  # the most GPUs one sidecar sits next to in the study's runs (DeepSeek-R1 on 8 x B200)
_GPUS_IN_NAME = re.compile(r"\((\d+)\s*x", re.IGNORECASE)  # "Qwen3-Coder-30B-A3B (2xH100)"


@dataclass(frozen=True, slots=True)
class StudyRate:
    """The estimate for one GPU family: its inputs and responses per second per GPU."""

    gpu: str
    power_w: float  # highest LLM steady-state power published
    j_per_response: float  # lowest LLM energy per response published, per GPU it ran on
    responses_per_s: float  # power_w / j_per_response

    def node_spans_per_s(self, spans_per_response: int = 1) -> float:
        """Spans a second from :data:`NODE_GPUS` such GPUs, each serving on its own."""
        return self.responses_per_s * NODE_GPUS * spans_per_response


def study_rate(published: dict[str, Any]) -> dict[str, StudyRate]:
    """Per GPU family the study published LLM power for, the upper estimate of responses per second."""
    out: dict[str, StudyRate] = {}
    for gpu, power in published["gpu_power_w"]["llm"].items():
        j = min(_j_per_response(block.get(gpu, {})) for block in published["per_task_min_energy"].values())
        if j < float("inf"):
            top_w = float(max(power["range"]))
            out[gpu] = StudyRate(gpu, top_w, j, top_w / j)
    return out


def _j_per_response(block: dict[str, Any]) -> float:
    """The lowest J per response (per GPU) in one task's figures for one GPU family (inf: none)."""
    if "j_per_response" in block:
        return float(min(block["j_per_response"]["range"]))
    per_model = [
        float(fig["j_per_response"]) / _gpus(name)
        for name, fig in block.get("models", {}).items()
        if "j_per_response" in fig
    ]
    return min(per_model, default=float("inf"))


def _gpus(model_name: str) -> int:
    found = _GPUS_IN_NAME.search(model_name)
    return int(found.group(1)) if found else 1


def for_scale(rate: float, cpu_s_per_span: float) -> str:
    """The measured rate beside the study's busiest GPUs (an upper estimate from the shipped figures),
    and the share of a core the sidecar would spend at their rate at ``cpu_s_per_span`` (measured)."""
    rates = study_rate(published())
    top = max(rates.values(), key=lambda r: r.responses_per_s)
    per_gpu = ", ".join(f"{r.responses_per_s:.1f} per {r.gpu.upper()}" for r in rates.values())
    node, traced = top.node_spans_per_s(), top.node_spans_per_s(2)
    return (
        f"  for scale (an upper estimate from the study's published figures, benchmarks/study_rate.py): "
        f"responses/s {per_gpu} (the highest LLM power over the lowest J a response); {NODE_GPUS} "
        f"{top.gpu.upper()}s each serving on its own send {node:,.0f} llm_request spans/s "
        f"({traced:,.0f} with a client span each): the rate above is {rate / traced:.0f}x that, and at "
        f"that rate the sidecar would spend {traced * cpu_s_per_span:.1%} of a core"
    )
