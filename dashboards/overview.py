"""The *Overview* dashboard: where the joules go, per model, per request, and whether to trust it.

Rows: efficiency (J/token, tokens/J, J per image / video, throughput per watt), GPU power and
energy, the prefill / decode / denoise / idle breakdown, per-request energy distributions, and
the sidecar's own health. Every energy series carries ``energy_source`` in its legend; an
estimate is drawn dashed orange, a simulation or replay dotted purple.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

from dashboards import tenants
from dashboards.panels import (
    HW,
    MODEL,
    RATE,
    PanelBuilder,
    Query,
    dashboard,
    heatmap,
    stat_panel,
    timeseries,
)

__all__ = ["UID", "build"]

UID = "jouletrace-overview"

_ACTIVE = f'gen_ai_server_energy_joules_total{{{MODEL}, jouletrace_phase!="idle"}}'
_TOKENS = f'gen_ai_server_output_units_total{{{MODEL}, jouletrace_unit="token"}}'
_UNITS = f"gen_ai_server_output_units_total{{{MODEL}}}"

# J per output token: attributed energy (idle excluded) over output tokens, per model. The
# denominator keeps only models with tokens flowing (> 0), so a stalled model shows a gap,
# not +Inf. group_left keeps energy_source from the energy side.
J_PER_TOKEN = (
    f"sum by (gen_ai_request_model, energy_source) (rate({_ACTIVE}[{RATE}]))\n"
    f"/ on (gen_ai_request_model) group_left ()\n"
    f"(sum by (gen_ai_request_model) (rate({_TOKENS}[{RATE}])) > 0)"
)
TOKENS_PER_J = (
    f"sum by (gen_ai_request_model) (rate({_TOKENS}[{RATE}]))\n"
    f"/ on (gen_ai_request_model) group_right ()\n"
    f"(sum by (gen_ai_request_model, energy_source) (rate({_ACTIVE}[{RATE}])) > 0)"
)
# One model produces one kind of unit: tokens (LLM), images or videos (diffusion).
J_PER_UNIT = (
    f"sum by (gen_ai_request_model) (rate({_ACTIVE}[{RATE}]))\n"
    f"/ on (gen_ai_request_model) group_right ()\n"
    f"(sum by (gen_ai_request_model, jouletrace_unit) (rate({_UNITS}[{RATE}])) > 0)"
)

_LEGEND_MS = "{{gen_ai_request_model}} ({{energy_source}})"

# Recording rules of deploy/prometheus/jouletrace-rules.yaml (group jouletrace.expected): the
# measured J/token per pod, and the J/token last week's median fitted costs give today's work.
_MEASURED_J_PER_TOKEN = f"namespace_pod_model:jouletrace_joules_per_output_token:ratio_rate5m{{{MODEL}}}"
_EXPECTED_J_PER_TOKEN = (
    f"namespace_pod:jouletrace_expected_joules_per_output_token:baseline_model_rate5m{{{HW}}}"
)

_README = (
    "Energy comes from the GPUs' own counters (NVML), split among the requests of each batch by the "
    "jouletrace sidecar. **Solid** lines are measured; **dashed orange** is an *estimate* (no energy "
    "counter: CPU-utilization model), **dotted purple** a simulation or replay. Idle energy is kept "
    "apart, never hidden: J/token excludes it; the phase breakdown shows it. "
    "Why a number moved: see the *jouletrace / Diagnosis* dashboard."
)


def _measured_vs_expected() -> PanelBuilder:
    panel = timeseries(
        "J/token: measured vs expected from the fitted model",
        "Solid: measured J per output token (idle excluded), per pod. Dashed: what it should be if "
        "last week's median fitted costs (per step, per token, idle floor) held, for the work vLLM "
        "reports now (steps, prompt and generated tokens, busy time). A change in load moves both "
        "lines; a regression opens a gap. The expected line leaves out attention over context, so "
        "it runs a little below: watch the gap change. Needs jouletrace's recording rules.",
        "joule",
        [
            Query(_MEASURED_J_PER_TOKEN, "{{pod}} {{gen_ai_request_model}}: measured"),
            Query(_EXPECTED_J_PER_TOKEN, "{{pod}}: expected at this batch size"),
        ],
        width=24,
        fill=0,
    )
    dashed = dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})
    return panel.override_by_query("B", [dashed])


def _efficiency() -> list[PanelBuilder]:
    return [
        stat_panel(
            "J per output token",
            "Attributed energy (idle excluded) over output tokens, per model, now.",
            "joule",
            [Query(J_PER_TOKEN, _LEGEND_MS, instant=True)],
            decimals=3,
        ),
        stat_panel(
            "Output tokens per joule",
            "The inverse of J/token: output tokens per joule of attributed energy, per model, now.",
            "short",
            [Query(TOKENS_PER_J, _LEGEND_MS, instant=True)],
            decimals=2,
        ),
        stat_panel(
            "Throughput per watt",
            "Output units per second per watt (= units per joule, idle included) over the sidecar's "
            "recent window, per model.",
            "short",
            [
                Query(
                    f"avg by (gen_ai_request_model, energy_source) "
                    f"(gen_ai_server_throughput_per_watt{{{MODEL}}})",
                    _LEGEND_MS,
                    instant=True,
                )
            ],
            decimals=2,
        ),
        stat_panel(
            "Energy source",
            "How each pod's energy is known, counted in devices: measured (GPU counter), integrated "
            "(power integrated over time, pre-Volta), estimate (a model, not a measurement), simulated, "
            "replay.",
            "none",
            [
                Query(
                    f"count by (energy_source) (hw_energy_joules_total{{{HW}}})",
                    "{{energy_source}}",
                    instant=True,
                )
            ],
        ),
        timeseries(
            "J per output token",
            "Attributed energy (idle excluded) over output tokens, per model.",
            "joule",
            [Query(J_PER_TOKEN, _LEGEND_MS)],
        ),
        timeseries(
            "Energy per output unit: J/token, J/image, J/video",
            "Attributed energy (idle excluded) over output units, per model and unit.",
            "joule",
            [Query(J_PER_UNIT, "{{gen_ai_request_model}} J/{{jouletrace_unit}}")],
        ),
        timeseries(
            "Output tokens per joule",
            "Output tokens per joule of attributed energy (idle excluded), per model.",
            "short",
            [Query(TOKENS_PER_J, _LEGEND_MS)],
        ),
        timeseries(
            "Throughput per watt",
            "Output units per second per watt, per model (idle energy included, unlike J/token).",
            "short",
            [
                Query(
                    f"avg by (gen_ai_request_model, energy_source) "
                    f"(gen_ai_server_throughput_per_watt{{{MODEL}}})",
                    _LEGEND_MS,
                )
            ],
        ),
        _measured_vs_expected(),
    ]


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


def _health() -> list[PanelBuilder]:
    return [
        timeseries(
            "Attribution lag",
            "Now minus the end of the last sealed attribution tick. Alert: JouletraceAttributionLagHigh.",
            "s",
            [Query(f"max by (pod) (jouletrace_attribution_lag_seconds{{{HW}}})", "{{pod}}")],
            width=8,
            fill=0,
        ),
        timeseries(
            "Energy-counter update period",
            "Measured update period of the GPU energy counter (about 0.1 s on NVML); requests shorter "
            "than this are flagged approximate.",
            "s",
            [Query(f"max by (pod) (jouletrace_meter_update_period_seconds{{{HW}}})", "{{pod}}")],
            width=8,
            fill=0,
        ),
        timeseries(
            "Requests pending",
            "Requests whose energy is not final yet (waiting for the timeline to cover their end).",
            "short",
            [Query(f"sum by (pod) (jouletrace_requests_pending{{{HW}}})", "{{pod}}")],
            width=8,
            fill=0,
        ),
        timeseries(
            "Conservation error",
            "|measured - attributed - idle| over all sealed ticks; should stay near 0 J.",
            "joule",
            [
                Query(
                    f"max by (pod, energy_source) (jouletrace_conservation_error_joules{{{HW}}})",
                    "{{pod}} ({{energy_source}})",
                )
            ],
            width=8,
            fill=0,
        ),
        timeseries(
            "Dropped work events and counter resets",
            "Work events dropped per second, per reason; energy-counter resets or wraps handled. "
            "A dropped-events series exists only after the first drop, so the query falls back "
            "to 0 per pod: a flat 0 means 'none', no data means the sidecar is not scraped.",
            "short",
            [
                Query(
                    f"sum by (pod, reason) (rate(jouletrace_events_dropped_total{{{HW}}}[{RATE}]))\n"
                    f"or sum by (pod) (jouletrace_attribution_lag_seconds{{{HW}}}) * 0",
                    "dropped {{pod}} {{reason}}",
                ),
                Query(
                    f"sum by (pod) (increase(jouletrace_meter_resets_total{{{HW}}}[{RATE}]))",
                    "resets {{pod}}",
                ),
            ],
            width=12,
            fill=0,
        ),
        timeseries(
            "Energy-counter phase error",
            "Per GPU: how well the reads are locked to the counter's update grid (NVML with "
            "poll_schedule=phase-lock); updates are dated within about this. A GPU whose lock is lost "
            "has no value (jouletrace_meter_phase_locked = 0: read on the fixed poll period until it "
            "locks again).",
            "s",
            [
                Query(
                    f"max by (pod, hw_id) (jouletrace_meter_phase_error_seconds{{{HW}}})",
                    "{{pod}} {{hw_id}}",
                )
            ],
            width=12,
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
            ("Energy efficiency", _efficiency),
            ("GPU power and energy", _gpu),
            ("Where the joules go: prefill / decode / denoise / idle", _phases),
            ("Per-request energy", _per_request),
            ("Energy per tenant (OpenAI proxy)", tenants.panels),
            ("Sidecar health", _health),
        ),
    )
