"""The Pipeline dashboard: events per table, the DLQ, flush/commit/load latency, bronze and silver
freshness and the transform's runs."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from deploy.grafana.common import (
    RATE,
    PanelBuilder,
    Query,
    Section,
    label_variable,
    new_dashboard,
    stat_panel,
    timeseries_panel,
)

__all__ = ["pipeline_dashboard"]

_TABLE = '{table=~"$table"}'
_GROUP = '{group=~"$group"}'


def _p95(histogram: str, selector: str = "") -> str:
    return f"histogram_quantile(0.95, sum by (le, table) (rate({histogram}_bucket{selector}[{RATE}])))"


def _throughput() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "Change events written to the lake",
            "Records per second the writers put into lake files, per table.",
            "recps",
            Query(f"sum by (table) (rate(cdcflow_records_written_total{_TABLE}[{RATE}]))", "{{table}}"),
            width=8,
        ),
        timeseries_panel(
            "Rows loaded into bronze",
            "Rows per second the loader inserted into bronze, per table.",
            "rowsps",
            Query(f"sum by (table) (rate(cdcflow_loader_rows_loaded_total{_TABLE}[{RATE}]))", "{{table}}"),
            width=8,
        ),
        timeseries_panel(
            "Loader backlog",
            "Lake files written but not yet loaded, per table.",
            "short",
            Query(f"max by (table) (cdcflow_loader_pending_files{_TABLE})", "{{table}}"),
            width=8,
        ),
    ]


def _dlq() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "Records sent to the DLQ, by reason",
            "From cdcflow monitor (every group's DLQ topic) and from the writers themselves.",
            "recps",
            Query(f"sum by (group, reason) (rate(cdcflow_dlq_records_total{_GROUP}[{RATE}]))", "{{group}} {{reason}}"),
            Query(f"sum by (reason) (rate(cdcflow_records_dlq_total[{RATE}]))", "writers: {{reason}}"),
        ),
        timeseries_panel(
            "DLQ depth",
            "Records in each group's DLQ topic (replayed or purged records leave it).",
            "short",
            Query(f"max by (group) (cdcflow_dlq_depth_records{_GROUP})", "{{group}}"),
        ),
    ]


def _latency() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "Lake flush duration (p95)",
            "Writing one partition's flush (its Parquet files, usually one), per table.",
            "s",
            Query(_p95("cdcflow_flush_duration_seconds", _TABLE), "{{table}}"),
            width=6,
        ),
        timeseries_panel(
            "Records per flush (p50)",
            "Records in one partition's flush: small means flushes by age (idle partitions); large, by rows or bytes.",
            "short",
            Query(
                f"histogram_quantile(0.5, sum by (le, table) (rate(cdcflow_flush_records_bucket{_TABLE}[{RATE}])))",
                "{{table}}",
            ),
            width=6,
        ),
        timeseries_panel(
            "Offset commit duration (p95)",
            "One synchronous commit; seconds mean a slow group coordinator.",
            "s",
            Query(
                f"histogram_quantile(0.95, sum by (le) (rate(cdcflow_commit_duration_seconds_bucket[{RATE}])))",
                "p95",
            ),
            width=6,
        ),
        timeseries_panel(
            "Bronze load duration (p95)",
            "One loader micro-batch, per table.",
            "s",
            Query(_p95("cdcflow_loader_batch_duration_seconds", _TABLE), "{{table}}"),
            width=6,
        ),
    ]


def _freshness() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "Bronze freshness",
            "Now minus the newest change's commit time in bronze, per table (an idle source table ages too).",
            "s",
            Query(f"max by (table) (cdcflow_bronze_freshness_seconds{_TABLE})", "{{table}}"),
        ),
        timeseries_panel(
            "Silver freshness and the last load",
            "Silver is as fresh as the last successful transform run; bronze as the last successful load.",
            "s",
            Query("time() - max(cdcflow_transform_last_success_timestamp_seconds)", "since the last good transform"),
            Query(
                f"time() - max by (table) (cdcflow_loader_last_success_timestamp_seconds{_TABLE})",
                "since the last load of {{table}}",
            ),
        ),
    ]


def _transform() -> list[PanelBuilder]:
    return [
        stat_panel(
            "Last transform run succeeded",
            "The outcome of the newest dbt build, as cdcflow monitor reads it (1 = success).",
            "bool",
            Query("min(cdcflow_transform_last_run_success)", "succeeded"),
            width=6,
        ),
        timeseries_panel(
            "Transform runs by outcome",
            "dbt builds per hour: success, failure, error, stopped.",
            "short",
            Query("sum by (status) (increase(cdcflow_transform_runs_total[1h]))", "{{status}}"),
            width=6,
        ),
        timeseries_panel(
            "Transform duration",
            "Seconds the last dbt build took.",
            "s",
            Query("max(cdcflow_transform_duration_seconds)", "last run"),
            width=6,
        ),
        timeseries_panel(
            "dbt test failures",
            "Failing dbt tests per model in the last run.",
            "short",
            Query("sum by (model) (cdcflow_dbt_test_failures)", "{{model}}"),
            width=6,
        ),
    ]


def pipeline_dashboard() -> dashboard.Dashboard:
    return new_dashboard(
        "cdcflow-pipeline",
        "cdcflow / Pipeline",
        "Events per table, the DLQ, latency of each stage, freshness of bronze and silver, transform runs.",
        [
            label_variable("table", "Table", "cdcflow_records_written_total"),
            label_variable("group", "Consumer group", "cdcflow_dlq_depth_records"),
        ],
        [
            Section("Throughput", _throughput()),
            Section("Dead-letter queue", _dlq()),
            Section("Latency", _latency()),
            Section("Freshness", _freshness()),
            Section("Transform (dbt)", _transform()),
        ],
    )
