"""The Grafana dashboards as code: the checked-in JSON is what the code renders, and every panel follows the
rules operators rely on (a unit, the templated data source, PromQL that parses, counters only as rates)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from deploy.grafana.__main__ import main as generate
from deploy.grafana.build import DASHBOARDS, render, stale
from tests.fixtures.monitoring import (
    DASHBOARDS_DIR,
    ROOT,
    counters_outside_rate,
    dashboards,
    metric_names,
    panel_queries,
    panels,
    variable_metrics,
)

#: Grafana unit ids the dashboards use (Grafana's "Standard options > Unit" list).
GRAFANA_UNITS = {"short", "s", "ms", "bytes", "bool", "recps", "rowsps"}
ALL_PANELS = [(name, panel) for name, board in dashboards().items() for panel in panels(board)]
ALL_QUERIES = list(panel_queries())


def _id(item: tuple[str, dict[str, Any]]) -> str:
    return f"{item[0]}:{item[1]['title']}"


def test_checked_in_json_is_what_the_code_renders() -> None:
    assert set(dashboards()) == set(DASHBOARDS), "a dashboard's JSON is missing or has no code"
    assert stale() == [], "run `make dashboards` and commit deploy/grafana/dashboards/"
    for name in DASHBOARDS:
        assert render(name) == render(name), f"{name} renders differently twice in a row"


def test_generate_writes_and_check_finds_a_stale_file(tmp_path: Path) -> None:
    assert generate(["--check"], directory=tmp_path) == 1, "an empty folder is stale"
    assert generate([], directory=tmp_path) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.json" for n in DASHBOARDS)
    assert generate(["--check"], directory=tmp_path) == 0
    (tmp_path / "lag.json").write_text("{}\n")
    assert generate(["--check"], directory=tmp_path) == 1


def test_dashboards_exist_with_unique_titles_uids_and_panel_ids() -> None:
    boards = dashboards()
    assert {b["uid"] for b in boards.values()} == {"cdcflow-lag", "cdcflow-pipeline", "cdcflow-source"}
    for name, board in boards.items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        titles = [p["title"] for p in panels(board)]
        assert len(titles) == len(set(titles)), f"{name}: panel titles repeat"
        assert len(titles) >= 8, f"{name}: only {len(titles)} panels"


@pytest.mark.parametrize("item", ALL_PANELS, ids=_id)
def test_every_panel_has_a_unit_and_the_templated_datasource(item: tuple[str, dict[str, Any]]) -> None:
    _, panel = item
    assert panel["fieldConfig"]["defaults"].get("unit") in GRAFANA_UNITS
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert panel["targets"], "a panel without a query"
    for target in panel["targets"]:
        assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert panel.get("description"), "say what the panel shows"


@pytest.mark.parametrize("query", ALL_QUERIES, ids=lambda q: f"{q[0]}:{q[1]}")
def test_every_query_parses_and_reads_counters_only_through_rate(query: tuple[str, str, str]) -> None:
    _, _, expr = query
    promql_parser.parse(expr)  # raises on a syntax error
    assert counters_outside_rate(expr) == []
    assert all(name.startswith(("cdcflow_", "debezium_", "up")) for name in metric_names(expr))


def test_the_counter_rule_catches_a_raw_counter() -> None:
    assert counters_outside_rate("sum(cdcflow_records_written_total)") == ["cdcflow_records_written_total{}"]
    assert counters_outside_rate("cdcflow_flush_duration_seconds_bucket") != []
    assert counters_outside_rate("max_over_time(cdcflow_records_written_total[5m])") != []
    assert counters_outside_rate("sum(rate(cdcflow_records_written_total[5m]))") == []


def test_variables_cover_group_and_table_and_every_dashboard_has_the_datasource_variable() -> None:
    names_by_board = {name: {v["name"] for v in board["templating"]["list"]} for name, board in dashboards().items()}
    assert all("datasource" in names for names in names_by_board.values())
    assert "group" in names_by_board["lag"]
    assert {"table", "group"} <= names_by_board["pipeline"]
    assert variable_metrics() >= {"cdcflow_consumer_lag_records", "cdcflow_records_written_total"}


def test_the_issue_asks_for_these_panels() -> None:
    titles = {name: {p["title"] for p in panels(board)} for name, board in dashboards().items()}
    assert {"Lag in records per partition", "Lag in seconds per partition", "Produced vs committed"} <= titles["lag"]
    assert any("Catch-up" in t for t in titles["lag"])
    assert {"Change events written to the lake", "Records sent to the DLQ, by reason", "Bronze freshness"} <= titles[
        "pipeline"
    ]
    assert {"WAL retained by each slot", "Connector running", "Debezium: behind the source"} <= titles["source"]


def test_provisioning_points_grafana_at_the_json() -> None:
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/cdcflow.yml").read_text())
    assert provider["apiVersion"] == 1
    assert [p["type"] for p in provider["providers"]] == ["file"]
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/cdcflow.yml").read_text())
    assert [d["type"] for d in datasource["datasources"]] == ["prometheus"]
    assert DASHBOARDS_DIR.is_dir()
