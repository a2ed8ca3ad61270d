"""The *Energy per tenant* row of the Overview: who the joules were spent for (the OpenAI proxy).

Tenants come from the proxy (a configured header or the OpenAI ``user`` field), bounded to
the top ``tenant_top_n`` by energy plus ``other`` and ``none`` (no tenant), so these panels
stay small whatever clients send. J/token per tenant is one ratio of two counters from the
same final records, so it is exact over the window.
"""

from __future__ import annotations

from dashboards.panels import MODEL, RATE, PanelBuilder, Query, timeseries

__all__ = ["J_PER_TOKEN_BY_TENANT", "TENANT_POWER", "panels"]

_ENERGY = f"gen_ai_server_tenant_energy_joules_total{{{MODEL}}}"
_TOKENS = f"gen_ai_server_tenant_output_tokens_total{{{MODEL}}}"
_BY = "gen_ai_request_model, jouletrace_tenant"

# Joules per second (W) of finished requests, per tenant: the tenant's share of the energy bill.
TENANT_POWER = f"sum by ({_BY}, energy_source) (rate({_ENERGY}[{RATE}]))"
J_PER_TOKEN_BY_TENANT = (
    f"sum by ({_BY}, energy_source) (rate({_ENERGY}[{RATE}]))\n"
    f"/ on ({_BY}) group_left ()\n"
    f"(sum by ({_BY}) (rate({_TOKENS}[{RATE}])) > 0)"
)
_LEGEND = "{{jouletrace_tenant}} {{gen_ai_request_model}} ({{energy_source}})"


def panels() -> list[PanelBuilder]:
    return [
        timeseries(
            "Energy per tenant",
            "Attributed energy of finished requests per second (W), per tenant: the top tenants by "
            "energy (knob tenant_top_n), 'other' for the rest, 'none' for requests without a tenant.",
            "watt",
            [Query(TENANT_POWER, _LEGEND)],
            stack=True,
        ),
        timeseries(
            "J per output token, per tenant",
            "Energy of a tenant's finished requests over their output tokens, per model.",
            "joule",
            [Query(J_PER_TOKEN_BY_TENANT, _LEGEND)],
            fill=0,
        ),
    ]
