"""Small typed helpers over Grafana's own SDK (``grafana-foundation-sdk``): one place for
the datasource, label selectors and the panel kinds we use (the template variables and
the dashboard frame: :mod:`dashboards.layout`).

Every query filters on the three template variables. They are multi-value with
"All" = ``.*``, so a Prometheus without Kubernetes labels (a static scrape, the
end-to-end test) still matches: ``namespace=~".*"`` matches an absent label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap as hm
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import stat
from grafana_foundation_sdk.builders import text as tx
from grafana_foundation_sdk.builders import timeseries as ts
from grafana_foundation_sdk.builders import xychart as xy
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hmm
from grafana_foundation_sdk.models import prometheus as pm
from grafana_foundation_sdk.models import text as tm
from grafana_foundation_sdk.models import xychart as xym

__all__ = [
    "DS",
    "HW",
    "MODEL",
    "RATE",
    "VLLM",
    "PanelBuilder",
    "Query",
    "heatmap",
    "note",
    "reset_ids",
    "row",
    "scatter",
    "stat_panel",
    "timeseries",
]

PanelBuilder = Builder[dm.Panel]

DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Label selectors (inside the braces). The gen_ai.* series carry the model as
# gen_ai_request_model, vLLM's own series as model_name, hw.* series no model.
HW = 'namespace=~"$namespace", pod=~"$pod"'
MODEL = f'{HW}, gen_ai_request_model=~"$model"'
VLLM = f'{HW}, model_name=~"$model"'
RATE = "$__rate_interval"

# How a non-measured energy source looks everywhere: an estimate is dashed and
# orange, a simulation or replay dotted and purple; a measurement stays solid.
_ESTIMATE = [
    dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
    dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "orange"}),
]
_SIMULATED = [
    dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dot", "dash": [0, 10]}),
    dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "purple"}),
]


@dataclass(frozen=True)
class Query:
    """One Prometheus query of a panel; ``legend`` is Grafana's legend format."""

    expr: str
    legend: str = ""
    instant: bool = False
    heatmap: bool = False

    def build(self, ref_id: str) -> prom.Dataquery:
        q = prom.Dataquery().expr(self.expr).ref_id(ref_id).datasource(DS)
        if self.legend:
            q = q.legend_format(self.legend)
        if self.heatmap:
            q = q.format(pm.PromQueryFormat.HEATMAP)
        return q.instant() if self.instant else q.range()


@dataclass
class _Ids:
    """Panel ids, unique within a dashboard, assigned in the order panels are made."""

    next_id: int = 1
    issued: list[int] = field(default_factory=list)

    def take(self) -> int:
        self.issued.append(self.next_id)
        self.next_id += 1
        return self.issued[-1]


_ids = _Ids()


def reset_ids() -> None:
    """Start panel ids at 1 again (each dashboard numbers its own panels)."""
    _ids.next_id = 1
    _ids.issued.clear()


def _refs(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def timeseries(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    width: int = 12,
    height: int = 8,
    stack: bool = False,
    fill: float = 10,
    right_axis: dict[str, str] | None = None,
) -> ts.Panel:
    """A time series panel; ``right_axis`` maps a query ref id to the unit drawn on the right."""
    panel = (
        ts.Panel()
        .id(_ids.take())
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(width)
        .height(height)
        .line_width(1)
        .fill_opacity(fill)
        .legend(
            cb.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.LIST)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    )
    if stack:
        panel = panel.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    for ref, query in zip(_refs(len(queries)), queries, strict=True):
        panel = panel.with_target(query.build(ref))
    for ref, right_unit in (right_axis or {}).items():
        panel = panel.override_by_query(
            ref,
            [
                dm.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
                dm.DynamicConfigValue(id_val="unit", value=right_unit),
            ],
        )
    return _mark_sources(panel)


def stat_panel(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    width: int = 6,
    height: int = 5,
    decimals: float | None = None,
) -> stat.Panel:
    """A stat panel showing the last value of each series (instant queries)."""
    panel = (
        stat.Panel()
        .id(_ids.take())
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(width)
        .height(height)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .color_mode(cm.BigValueColorMode.VALUE)
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if decimals is not None:
        panel = panel.decimals(decimals)
    for ref, query in zip(_refs(len(queries)), queries, strict=True):
        panel = panel.with_target(query.build(ref))
    return _mark_sources(panel)


def heatmap(title: str, description: str, unit: str, query: Query, *, width: int = 12) -> hm.Panel:
    """A heatmap of a Prometheus histogram's buckets (``sum by (le) (rate(..._bucket))``)."""
    return (
        hm.Panel()
        .id(_ids.take())
        .title(title)
        .description(description)
        .datasource(DS)
        .span(width)
        .height(8)
        .calculate(False)
        .color(
            hm.HeatmapColorOptions()
            .mode(hmm.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .scale(hmm.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
        )
        .y_axis(hm.YAxisConfig().unit(unit))
        .with_target(query.build("A"))
    )


def scatter(title: str, description: str, x: Query, y: Query, *, y_unit: str, width: int = 12) -> xy.Panel:
    """An XY chart of ``y`` against ``x``: both queries joined on time, x taken by its legend name."""
    return (
        xy.Panel()
        .id(_ids.take())
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(y_unit)
        .span(width)
        .height(8)
        .series_mapping(xym.SeriesMapping.AUTO)
        .dims(xy.XYDimensionConfig().frame(0).x(x.legend))
        .show(xym.ScatterShow.POINTS)
        .point_size(cb.ScaleDimensionConfig().fixed(5).min(1).max(20))
        .with_transformation(
            dm.DataTransformerConfig(id_val="joinByField", options={"byField": "Time", "mode": "outer"})
        )
        .with_target(x.build("A"))
        .with_target(y.build("B"))
    )


def row(title: str) -> db.Row:
    """A (non-collapsed) row: the panels added after it, up to the next row, belong to it."""
    return db.Row(title).id(_ids.take())


def note(title: str, markdown: str, *, width: int = 24, height: int = 3) -> tx.Panel:
    """A text panel: how to read the dashboard."""
    return (
        tx.Panel()
        .id(_ids.take())
        .title(title)
        .span(width)
        .height(height)
        .mode(tm.TextMode.MARKDOWN)
        .content(markdown)
    )


_P = TypeVar("_P", ts.Panel, stat.Panel)


def _mark_sources(panel: _P) -> _P:
    return panel.override_by_regexp(".*estimate.*", _ESTIMATE).override_by_regexp(
        ".*(simulated|replay).*", _SIMULATED
    )
