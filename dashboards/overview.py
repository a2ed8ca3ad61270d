"""The *Overview* dashboard: where the joules go, per model, per request, and whether to trust it.

Rows: efficiency (J/token, tokens/J, J per image / video, throughput per watt), GPU power and
energy, the prefill / decode / denoise / idle breakdown, per-request energy distributions, and
the sidecar's own health. Every energy series carries ``energy_source`` in its legend; an
estimate is drawn dashed orange, a simulation or replay dotted purple.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from dashboards import efficiency, health, tenants
from dashboards.layout import dashboard
from dashboards.panels import (
    HW,
    MODEL,
    RATE,
    PanelBuilder,
    Query,
    heatmap,
    stat_panel,
    timeseries,
)

__all__ = ["UID", "build"]

UID = "jouletrace-overview"

_README = (
    "Energy comes from the GPUs' own counters (NVML), split among the requests of each batch by the "
    "jouletrace sidecar. **Solid** lines are measured; **dashed orange** is an *estimate* (no energy "
    "counter: CPU-utilization model), **dotted purple** a simulation or replay. Idle energy is kept "
    "apart, never hidden: J/token excludes it; the phase breakdown shows it. "
    "Why a number moved: see the *jouletrace / Diagnosis* dashboard."
)


def _gpu() -> list[PanelBuilder]:
    per_gpu = "{{pod}} {{hw_name}} {{hw_id}} ({{energy_source}})"
    return [
        timeseries(
            "GPU power",
            "Instantaneous power of each GPU (NVML power field), with its enforced power limit.",
            "watt",
            [
                Query(f"sum by (pod, hw_name, hw_id, energy_source) (hw_power_watts{{{HW}}})", per_gpu),
                Query(
                    f"max by (pod, hw_name, hw_id) (jouletrace_gpu_power_limit_watts{{{HW}}})",
                    "limit {{pod}} {{hw_id}}",
                ),
            ],
            fill=0,
        ),
        timeseries(
            "GPU power from the energy counter",
            "rate() of each GPU's cumulative energy counter: average power over the interval.",
            "watt",
            [
                Query(
                    f"sum by (pod, hw_name, hw_id, energy_source) "
                    f"(rate(hw_energy_joules_total{{{HW}}}[{RATE}]))",
                    per_gpu,
                )
            ],
        ),
        stat_panel(
            "GPU energy in the time range",
            "Energy the selected GPUs consumed over the dashboard's time range.",
            "joule",
            [
                Query(
                    f"sum by (energy_source) (increase(hw_energy_joules_total{{{HW}}}[$__range]))",
                    "{{energy_source}}",
                    instant=True,
                )
            ],
            width=12,
        ),
        stat_panel(
            "GPU utilization",
            "Mean GPU utilization of the selected GPUs, now.",
            "percentunit",
            [Query(f"avg by (pod) (hw_gpu_utilization{{{HW}}})", "{{pod}}", instant=True)],
            width=12,
        ),
    ]


def _phases() -> list[PanelBuilder]:
    energy = f"gen_ai_server_energy_joules_total{{{MODEL}}}"
    return [
        timeseries(
            "Power by phase",
            "Energy rate per phase, stacked: prefill, decode, denoise (diffusion) and idle "
            "(no request in the tick: static power wastage).",
            "watt",
            [
                Query(
                    f"sum by (jouletrace_phase, energy_source) (rate({energy}[{RATE}]))",
                    "{{jouletrace_phase}} ({{energy_source}})",
                )
            ],
            stack=True,
            fill=40,
        ),
        stat_panel(
            "Energy share by phase in the time range",
            "Fraction of all energy in each phase over the dashboard's time range.",
            "percentunit",
            [
                Query(
                    f"sum by (jouletrace_phase) (increase({energy}[$__range]))\n"
                    f"/ ignoring (jouletrace_phase) group_left ()\n"
                    f"sum (increase({energy}[$__range]))",
                    "{{jouletrace_phase}}",
                    instant=True,
                )
            ],
            width=12,
            height=8,
        ),
    ]


def _per_request() -> list[PanelBuilder]:
    req = "gen_ai_server_request_energy_joules"
    tok = "gen_ai_server_energy_per_output_token_joules"
    by = "le, gen_ai_request_model, jouletrace_task"
    return [
        heatmap(
            "Energy per request",
            "Distribution of each finished request's attributed energy (J).",
            "joule",
            Query(f"sum by (le) (rate({req}_bucket{{{MODEL}}}[{RATE}]))", "{{le}}", heatmap=True),
        ),
        heatmap(
            "J per output token, per request",
            "Distribution of each finished request's energy divided by its output tokens.",
            "joule",
            Query(f"sum by (le) (rate({tok}_bucket{{{MODEL}}}[{RATE}]))", "{{le}}", heatmap=True),
        ),
        timeseries(
            "Energy per request: p50 / p90 / p99 by task",
            "Quantiles of per-request energy, per model and task (from the histogram).",
            "joule",
            [
                Query(
                    f"histogram_quantile({q}, sum by ({by}) (rate({req}_bucket{{{MODEL}}}[{RATE}])))",
                    f"p{round(q * 100)} {{{{gen_ai_request_model}}}} {{{{jouletrace_task}}}}",
                )
                for q in (0.5, 0.9, 0.99)
            ],
            fill=0,
        ),
        timeseries(
            "Mean J per output token per request, by task",
            "Mean over finished requests of (request energy / its output tokens), per model and task. "
            "Differs from the aggregate J/token: each request counts once, whatever its length.",
            "joule",
            [
                Query(
                    f"sum by (gen_ai_request_model, jouletrace_task, energy_source) "
                    f"(rate({tok}_sum{{{MODEL}}}[{RATE}]))\n"
                    f"/\nsum by (gen_ai_request_model, jouletrace_task, energy_source) "
                    f"(rate({tok}_count{{{MODEL}}}[{RATE}]))",
                    "{{gen_ai_request_model}} {{jouletrace_task}} ({{energy_source}})",
                )
            ],
            fill=0,
        ),
    ]


def build() -> db.Dashboard:
    """The Overview dashboard, ready to encode as JSON."""
    return dashboard(
        "jouletrace / Overview",
        UID,
        "Per-request GPU energy: J/token, J/image, J/video, power, phases, sidecar health.",
        _README,
        (
            ("Energy efficiency", efficiency.panels),
            ("GPU power and energy", _gpu),
            ("Where the joules go: prefill / decode / denoise / idle", _phases),
            ("Per-request energy", _per_request),
            ("Energy per tenant (OpenAI proxy)", tenants.panels),
            ("Sidecar health", health.panels),
        ),
    )
