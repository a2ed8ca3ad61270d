"""The *Energy efficiency* row of the Overview: J/token, tokens/J, J per image / video, per watt.

J/token and tokens/J are attributed energy (idle excluded) over output tokens, per model;
throughput per watt includes idle energy, as the study counts it. The last panel sets the
measured J/token beside what last week's fitted costs give for today's work (recording rules).
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dm

from dashboards.panels import HW, MODEL, RATE, PanelBuilder, Query, stat_panel, timeseries

__all__ = ["J_PER_TOKEN", "J_PER_UNIT", "THROUGHPUT_PER_WATT", "TOKENS_PER_J", "panels"]

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
THROUGHPUT_PER_WATT = (
    f"avg by (gen_ai_request_model, energy_source) (gen_ai_server_throughput_per_watt{{{MODEL}}})"
)

_LEGEND_MS = "{{gen_ai_request_model}} ({{energy_source}})"

# Recording rules of deploy/prometheus/jouletrace-rules.yaml (group jouletrace.expected): the
# measured J/token per pod, and the J/token last week's median fitted costs give today's work.
_MEASURED_J_PER_TOKEN = f"namespace_pod_model:jouletrace_joules_per_output_token:ratio_rate5m{{{MODEL}}}"
_EXPECTED_J_PER_TOKEN = (
    f"namespace_pod:jouletrace_expected_joules_per_output_token:baseline_model_rate5m{{{HW}}}"
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


def panels() -> list[PanelBuilder]:
    """The row's panels: the figures now, then over time."""
    return _efficiency_now() + _efficiency_trends()


def _efficiency_now() -> list[PanelBuilder]:
    """The row's stat panels: the figures now, and where the energy comes from."""
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
            [Query(THROUGHPUT_PER_WATT, _LEGEND_MS, instant=True)],
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
    ]


def _efficiency_trends() -> list[PanelBuilder]:
    """The row's time series: the same figures over time, and measured vs expected J/token."""
    return [
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
            [Query(THROUGHPUT_PER_WATT, _LEGEND_MS)],
        ),
        _measured_vs_expected(),
    ]
