"""A jouletrace dashboard's frame: the template variables, shared settings, the how-to-read note and rows.

The panel kinds inside the rows are in :mod:`dashboards.panels`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.panels import DS, note, reset_ids, row

__all__ = ["dashboard", "variables"]


def variables() -> list[db.DatasourceVariable | db.QueryVariable]:
    """datasource, namespace, model, pod: label names as a Prometheus fed by a ServiceMonitor has them."""

    def query_var(name: str, label: str, query: str) -> db.QueryVariable:
        return (
            db.QueryVariable(name)
            .label(label)
            .datasource(DS)
            .query(query)
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(dm.VariableOption(selected=True, text="All", value="$__all"))
        )

    return [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        query_var("namespace", "Namespace", "label_values(hw_energy_joules_total, namespace)"),
        query_var(
            "model",
            "Model",
            'label_values(gen_ai_server_energy_joules_total{namespace=~"$namespace"}, gen_ai_request_model)',
        ),
        query_var("pod", "Pod", 'label_values(hw_energy_joules_total{namespace=~"$namespace"}, pod)'),
    ]


def dashboard(
    title: str,
    uid: str,
    description: str,
    readme: str,
    rows: Sequence[tuple[str, Callable[[], Sequence[Builder[dm.Panel]]]]],
) -> db.Dashboard:
    """A jouletrace dashboard: shared settings, the variables, a how-to-read note, then titled rows.

    Each row's panels are built when the row is laid out, so panel ids follow layout order.
    """
    reset_ids()
    dash = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["jouletrace", "energy", "gen-ai"])
        .editable()
        .time("now-3h", "now")
        .refresh("30s")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .timezone("browser")
        .link(
            db.DashboardLink("jouletrace")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(["jouletrace"])
            .as_dropdown(False)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for variable in variables():
        dash = dash.with_variable(variable)
    dash = dash.with_panel(note("How to read this dashboard", readme))
    for row_title, make_panels in rows:
        dash = dash.with_row(row(row_title))
        for panel in make_panels():
            dash = dash.with_panel(panel)
    return dash
