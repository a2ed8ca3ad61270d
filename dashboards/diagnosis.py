"""The *Diagnosis* dashboard: why J/token is what it is, in the framework of "Where Do the Joules Go?".

Energy per token is explained by latent metrics (batch size, KV-cache use, GPU utilization,
clocks against power), by static power drawn whether or not work runs (idle share, fitted
static power) and by the sidecar's fitted energy model: J per step (weights streamed once per
engine step, shared by the batch), J per prefill / decode token and per context token.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from dashboards.layout import dashboard
from dashboards.panels import (
    HW,
    MODEL,
    RATE,
    VLLM,
    PanelBuilder,
    Query,
    scatter,
    stat_panel,
    timeseries,
)

__all__ = ["UID", "build"]

UID = "jouletrace-diagnosis"

_README = (
    "The study's framework: a tick's energy = static power x time + a fixed cost per engine step "
    "(shared by the batch) + per-token costs (prefill, decode, attention over context). Bigger batches "
    "amortise the step cost, so J/token falls with batch size until memory (KV cache) or compute "
    "saturates. Idle energy (no request running) is static power wastage. vLLM's own metrics "
    "(`vllm:*`) come from vLLM's /metrics; the `jouletrace_model_*` numbers from the sidecar's fit."
)

_ENERGY = f"gen_ai_server_energy_joules_total{{{MODEL}}}"
_IDLE = f'gen_ai_server_energy_joules_total{{{MODEL}, jouletrace_phase="idle"}}'
_TOKENS = f'gen_ai_server_output_units_total{{{MODEL}, jouletrace_unit="token"}}'


def _latent() -> list[PanelBuilder]:
    return _batch_and_gpu() + _tokens_and_memory()


def _batch_and_gpu() -> list[PanelBuilder]:
    """The batch and the queue, KV-cache pressure, GPU utilization and clock against power."""
    return [
        timeseries(
            "Batch size: running and waiting requests",
            "vLLM's running requests (the batch) and waiting requests (the queue).",
            "short",
            [
                Query(f"sum by (pod, model_name) (vllm:num_requests_running{{{VLLM}}})", "running {{pod}}"),
                Query(f"sum by (pod, model_name) (vllm:num_requests_waiting{{{VLLM}}})", "waiting {{pod}}"),
            ],
            fill=0,
        ),
        timeseries(
            "KV-cache use",
            "Fraction of vLLM's KV-cache blocks in use (memory pressure: preemption near 100 %).",
            "percentunit",
            [Query(f"max by (pod, model_name) (vllm:kv_cache_usage_perc{{{VLLM}}})", "{{pod}}")],
            fill=0,
        ),
        timeseries(
            "GPU utilization",
            "Fraction of time a kernel ran on the GPU (NVML); not how much of the GPU it used.",
            "percentunit",
            [Query(f"avg by (pod, hw_id) (hw_gpu_utilization{{{HW}}})", "{{pod}} {{hw_id}}")],
            fill=0,
        ),
        timeseries(
            "SM clock vs power",
            "Streaming-multiprocessor clock (left) against power (right): a power-capped GPU "
            "lowers its clock.",
            "hertz",
            [
                Query(
                    f"avg by (pod, hw_id) (jouletrace_gpu_sm_clock_hertz{{{HW}}})", "clock {{pod}} {{hw_id}}"
                ),
                Query(
                    f"sum by (pod, hw_id, energy_source) (hw_power_watts{{{HW}}})",
                    "power {{pod}} {{hw_id}} ({{energy_source}})",
                ),
            ],
            fill=0,
            right_axis={"B": "watt"},
        ),
    ]


def _tokens_and_memory() -> list[PanelBuilder]:
    """vLLM's token throughput, the sidecar's coverage of it, GPU memory."""
    return [
        timeseries(
            "Tokens per second: prompt and generation",
            "vLLM's prompt (prefill) and generation (decode) token throughput.",
            "short",
            [
                Query(
                    f"sum by (pod, model_name) (rate(vllm:prompt_tokens_total{{{VLLM}}}[{RATE}]))",
                    "prompt {{pod}}",
                ),
                Query(
                    f"sum by (pod, model_name) (rate(vllm:generation_tokens_total{{{VLLM}}}[{RATE}]))",
                    "generation {{pod}}",
                ),
            ],
            fill=0,
        ),
        timeseries(
            "Token coverage: tokens attributed / tokens vLLM generated",
            "Output tokens the sidecar attributed energy to, over the tokens vLLM reports generating. "
            "Below 100 %: the sidecar misses requests (tap down, events dropped).",
            "percentunit",
            [
                Query(
                    f"sum by (namespace, pod) (rate({_TOKENS}[{RATE}]))\n/ on (namespace, pod)\n"
                    f"(sum by (namespace, pod) (rate(vllm:generation_tokens_total{{{VLLM}}}[{RATE}])) > 0)",
                    "{{pod}}",
                )
            ],
            fill=0,
        ),
        timeseries(
            "GPU memory used",
            "GPU memory in use (vLLM reserves most of it for the KV cache at start).",
            "bytes",
            [Query(f"sum by (pod, hw_id) (hw_gpu_memory_usage_bytes{{{HW}}})", "{{pod}} {{hw_id}}")],
            fill=0,
        ),
    ]


def _static() -> list[PanelBuilder]:
    return _static_power() + _static_fit()


def _static_power() -> list[PanelBuilder]:
    """Idle energy share, and the fit's static and busy power against the measured power."""
    measured_w = f"sum by (namespace, pod, energy_source) (rate(hw_energy_joules_total{{{HW}}}[{RATE}]))"
    return [
        timeseries(
            "Idle energy share",
            "Energy of ticks with no request running over all energy, per model: static power "
            "wastage. Alert: JouletraceIdleEnergyShareHigh.",
            "percentunit",
            [
                Query(
                    f"sum by (gen_ai_request_model) (rate({_IDLE}[{RATE}]))\n/\n"
                    f"(sum by (gen_ai_request_model) (rate({_ENERGY}[{RATE}])) > 0)",
                    "{{gen_ai_request_model}}",
                )
            ],
            fill=20,
        ),
        timeseries(
            "Fitted static and busy power vs measured power",
            "The fit's static power (drawn busy or idle) and extra busy power, against the measured "
            "average power of the pod's GPUs.",
            "watt",
            [
                Query(
                    f"sum by (pod, energy_source) (jouletrace_model_static_power_watts{{{HW}}})",
                    "static {{pod}} ({{energy_source}})",
                ),
                Query(
                    f"sum by (pod, energy_source) (jouletrace_model_busy_power_watts{{{HW}}})",
                    "busy {{pod}} ({{energy_source}})",
                ),
                Query(measured_w, "measured {{pod}} ({{energy_source}})"),
            ],
            fill=0,
        ),
    ]


def _static_fit() -> list[PanelBuilder]:
    """The fitted static share of the power bill now, and how well the fit explains the energy."""
    return [
        stat_panel(
            "Static power share (fitted)",
            "Fitted static power over measured average power, now: the part of the power bill "
            "that does not depend on the work.",
            "percentunit",
            [
                Query(
                    f"sum by (namespace, pod) (jouletrace_model_static_power_watts{{{HW}}})\n"
                    f"/ on (namespace, pod)\n"
                    f"(sum by (namespace, pod) (rate(hw_energy_joules_total{{{HW}}}[{RATE}])) > 0)",
                    "{{pod}}",
                    instant=True,
                )
            ],
            width=12,
        ),
        stat_panel(
            "Fit quality (R²)",
            "Coefficient of determination of the energy fit over its window; below about 0.8 the "
            "fitted split is shaky (too little variation in the batch, or a missing regressor).",
            "none",
            [Query(f"max by (pod) (jouletrace_model_fit_r2{{{HW}}})", "{{pod}}", instant=True)],
            width=12,
            decimals=3,
        ),
    ]


def _fitted() -> list[PanelBuilder]:
    return [
        timeseries(
            "Fitted energy per engine step",
            "Fixed energy per step (weights streamed once per step), shared by the requests in the batch.",
            "joule",
            [
                Query(
                    f"max by (pod, energy_source) (jouletrace_model_energy_per_step_joules{{{HW}}})",
                    "{{pod}} ({{energy_source}})",
                )
            ],
            width=8,
            fill=0,
        ),
        timeseries(
            "Fitted energy per token: prefill, decode, context",
            "Energy per prefill token, per decode token (memory-bound: costs more) and per token of "
            "context attended per step.",
            "joule",
            [
                Query(
                    f"max by (pod, jouletrace_phase, energy_source) "
                    f"(jouletrace_model_energy_per_token_joules{{{HW}}})",
                    "{{jouletrace_phase}} {{pod}} ({{energy_source}})",
                ),
                Query(
                    f"max by (pod, energy_source) (jouletrace_model_energy_per_context_token_joules{{{HW}}})",
                    "context {{pod}} ({{energy_source}})",
                ),
            ],
            width=8,
            fill=0,
        ),
        timeseries(
            "Fitted energy per denoising unit",
            "Diffusion: energy per work unit (pixels x frames x steps).",
            "joule",
            [
                Query(
                    f"max by (pod, energy_source) (jouletrace_model_energy_per_denoise_unit_joules{{{HW}}})",
                    "{{pod}} ({{energy_source}})",
                )
            ],
            width=8,
            fill=0,
        ),
    ]


def _batch() -> list[PanelBuilder]:
    j_per_token = (
        f'sum(rate(gen_ai_server_energy_joules_total{{{MODEL}, jouletrace_phase!="idle"}}[{RATE}]))\n'
        f'/ (sum(rate(gen_ai_server_output_units_total{{{MODEL}, jouletrace_unit="token"}}[{RATE}])) > 0)'
    )
    batch = f"avg(vllm:num_requests_running{{{VLLM}}})"
    return [
        scatter(
            "J/token vs batch size",
            "Each point: one interval's J/token against the mean number of running requests. Select one "
            "model. The study's curve: J/token falls as the batch grows, then flattens.",
            Query(batch, "batch size"),
            Query(j_per_token, "J/token"),
            y_unit="joule",
        ),
        timeseries(
            "J/token and batch size over time",
            "J/token (left) and the mean batch size (right) of the selected models.",
            "joule",
            [Query(j_per_token, "J/token"), Query(batch, "batch size")],
            fill=0,
            right_axis={"B": "short"},
        ),
    ]


def build() -> db.Dashboard:
    """The Diagnosis dashboard, ready to encode as JSON."""
    return dashboard(
        "jouletrace / Diagnosis",
        UID,
        "Why J/token is what it is: latent metrics, static power, the fitted energy model.",
        _README,
        (
            ("Latent metrics", _latent),
            ("Static power wastage", _static),
            ("Fitted energy model", _fitted),
            ("J/token vs batch size", _batch),
        ),
    )
