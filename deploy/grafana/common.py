"""What every cdcflow dashboard shares: the templated data source, label variables and panel shapes.

Every panel and every query points at the data source variable (``${datasource}``), so the same JSON works
on any Grafana whatever its Prometheus data source is called, and every panel declares a unit: the tests
in ``tests/unit/test_dashboards.py`` hold both as rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Panel, VariableRefresh, VariableSort

__all__ = [
    "DATASOURCE",
    "RATE",
    "PanelBuilder",
    "Query",
    "Section",
    "datasource_variable",
    "label_variable",
    "new_dashboard",
    "stat_panel",
    "timeseries_panel",
]

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

#: Grafana's own window for rate(): at least four scrape intervals, so a missed scrape never empties a graph.
RATE = "$__rate_interval"


PanelBuilder = Builder[Panel]


@dataclass(frozen=True, slots=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True, slots=True)
class Section:
    """A row of the dashboard and the panels under it."""

    title: str
    panels: list[PanelBuilder]


def new_dashboard(
    uid: str, title: str, description: str, variables: list[dashboard.QueryVariable], sections: list[Section]
) -> dashboard.Dashboard:
    """A dashboard with the data source variable first, then ``variables``, then one row per section."""
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .tags(["cdcflow"])
        .description(description)
        .refresh("30s")
        .time("now-3h", "now")
        .with_variable(datasource_variable())
    )
    for variable in variables:
        board = board.with_variable(variable)
    for section in sections:
        board = board.with_row(dashboard.Row(section.title))
        for panel in section.panels:
            board = board.with_panel(panel)
    return board


def datasource_variable() -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")


def label_variable(name: str, label: str, metric: str) -> dashboard.QueryVariable:
    """A multi-value variable over the values ``metric`` carries in its ``name`` label; "All" is ``.*`` so a
    value that appears after the dashboard loaded is included too."""
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, {name})")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def _targets(queries: tuple[Query, ...]) -> list[prometheus.Dataquery]:
    return [
        prometheus.Dataquery().expr(q.expr).legend_format(q.legend).ref_id(chr(ord("A") + i)).datasource(DATASOURCE)
        for i, q in enumerate(queries)
    ]


def timeseries_panel(
    title: str, description: str, unit: str, *queries: Query, width: int = 12, height: int = 8
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.TABLE)
            .placement(common_models.LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "max"])
        )
    )
    for target in _targets(queries):
        panel = panel.with_target(target)
    return panel


def stat_panel(title: str, description: str, unit: str, *queries: Query, width: int = 8, height: int = 5) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(common_models.BigValueGraphMode.AREA)
    )
    for target in _targets(queries):
        panel = panel.with_target(target)
    return panel
