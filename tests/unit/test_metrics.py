"""The metric-name contract of DESIGN.md ("Operations"), checked against what the classes register."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.metrics import (
    EnricherMetrics,
    LoaderMetrics,
    MonitorMetrics,
    TransformMetrics,
    WriterMetrics,
    new_registry,
    register_build_info,
)

Metric = Counter | Gauge | Histogram
Component = WriterMetrics | LoaderMetrics | TransformMetrics | MonitorMetrics | EnricherMetrics

# The table of DESIGN.md, as data: component → {exposed name: (type, label names)}.
CONTRACT: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "writer": {
        "cdcflow_records_consumed_total": ("counter", ("topic", "partition")),
        "cdcflow_records_written_total": ("counter", ("table",)),
        "cdcflow_records_dlq_total": ("counter", ("topic", "reason")),
        "cdcflow_tombstones_skipped_total": ("counter", ("topic",)),
        "cdcflow_writer_consume_lag_records": ("gauge", ("group", "topic", "partition")),
        "cdcflow_writer_consume_lag_seconds": ("gauge", ("group", "topic", "partition")),
        "cdcflow_flush_duration_seconds": ("histogram", ("table",)),
        "cdcflow_flush_records": ("histogram", ("table",)),
        "cdcflow_lake_files_written_total": ("counter", ("table",)),
        "cdcflow_lake_bytes_written_total": ("counter", ("table",)),
        "cdcflow_commit_duration_seconds": ("histogram", ()),
        "cdcflow_rebalances_total": ("counter", ("kind",)),
        "cdcflow_buffered_bytes": ("gauge", ()),
        "cdcflow_paused_partitions": ("gauge", ()),
        "cdcflow_schema_changes_total": ("counter", ("table", "kind")),
    },
    "loader": {
        "cdcflow_loader_rows_loaded_total": ("counter", ("table",)),
        "cdcflow_loader_files_loaded_total": ("counter", ("table",)),
        "cdcflow_loader_batch_duration_seconds": ("histogram", ("table",)),
        "cdcflow_loader_pending_files": ("gauge", ("table",)),
        "cdcflow_loader_pending_bytes": ("gauge", ("table",)),
        "cdcflow_loader_last_success_timestamp_seconds": ("gauge", ("table",)),
        "cdcflow_loader_failures_total": ("counter", ("table", "kind")),
        "cdcflow_bronze_freshness_seconds": ("gauge", ("table",)),
    },
    "transform": {
        "cdcflow_transform_runs_total": ("counter", ("status",)),
        "cdcflow_transform_duration_seconds": ("gauge", ()),
        "cdcflow_transform_last_success_timestamp_seconds": ("gauge", ()),
        "cdcflow_dbt_test_failures": ("gauge", ("model",)),
    },
    "monitor": {
        "cdcflow_consumer_lag_records": ("gauge", ("group", "topic", "partition")),
        "cdcflow_consumer_lag_seconds": ("gauge", ("group", "topic", "partition")),
        "cdcflow_consumer_committed_offset": ("gauge", ("group", "topic", "partition")),
        "cdcflow_topic_end_offset": ("gauge", ("topic", "partition")),
        "cdcflow_replication_slot_retained_bytes": ("gauge", ("slot",)),
        "cdcflow_replication_slot_active": ("gauge", ("slot",)),
        "cdcflow_replication_slot_confirmed_flush_lag_bytes": ("gauge", ("slot",)),
        "cdcflow_replication_slot_wal_status": ("gauge", ("slot", "status")),
        "cdcflow_connector_up": ("gauge", ("connector",)),
        "cdcflow_connector_task_running": ("gauge", ("connector", "task")),
        "cdcflow_source_unpublished_tables": ("gauge", ("connector",)),
        "cdcflow_source_unpublishable_tables": ("gauge", ("connector", "reason")),
        "cdcflow_source_unloadable_types": ("gauge", ("connector",)),
        "cdcflow_bronze_freshness_seconds": ("gauge", ("table",)),
        "cdcflow_bronze_last_load_timestamp_seconds": ("gauge", ("table",)),
        "cdcflow_transform_last_run_timestamp_seconds": ("gauge", ()),
        "cdcflow_transform_last_run_success": ("gauge", ()),
        "cdcflow_dlq_records_total": ("counter", ("group", "reason")),
        "cdcflow_dlq_depth_records": ("gauge", ("group",)),
        "cdcflow_monitor_probe_up": ("gauge", ("probe",)),
        "cdcflow_monitor_probe_duration_seconds": ("gauge", ("probe",)),
    },
    "enricher": {
        "cdcflow_enricher_records_consumed_total": ("counter", ("topic", "partition")),
        "cdcflow_enricher_records_produced_total": ("counter", ("released_by",)),
        "cdcflow_enricher_sides_unjoined_total": ("counter", ("side", "state")),
        "cdcflow_enricher_records_dlq_total": ("counter", ("topic", "reason")),
        "cdcflow_enricher_table_changes_total": ("counter", ("table", "outcome")),
        "cdcflow_enricher_held_records": ("gauge", ()),
        "cdcflow_enricher_watermark_lsn": ("gauge", ("table",)),
        "cdcflow_enricher_transaction_duration_seconds": ("histogram", ()),
        "cdcflow_enricher_transactions_total": ("counter", ("outcome",)),
    },
    "all": {
        "cdcflow_build_info": ("gauge", ("version",)),
    },
}

COMPONENTS: dict[str, type[Component]] = {
    "writer": WriterMetrics,
    "loader": LoaderMetrics,
    "transform": TransformMetrics,
    "monitor": MonitorMetrics,
    "enricher": EnricherMetrics,
}


def _family_name(name: str, kind: str) -> str:
    """prometheus_client names a counter's family without ``_total`` and adds it to the sample."""
    return name.removesuffix("_total") if kind == "counter" else name


def _sample_name(name: str, kind: str) -> str:
    return f"{name}_count" if kind == "histogram" else name


def _metrics_of(component: Component) -> list[Metric]:
    return [value for value in vars(component).values() if isinstance(value, Counter | Gauge | Histogram)]


def _family_of(metric: Metric) -> str:
    return next(iter(metric.describe())).name


def _registered_types(registry: CollectorRegistry) -> dict[str, str]:
    return {family.name: family.type for family in registry.collect()}


def test_a_fresh_registry_holds_exactly_the_contract() -> None:
    """Each component's registry holds its table of the contract; build info is everyone's."""
    for component, cls in COMPONENTS.items():
        registry = new_registry(with_process_metrics=False)
        cls(registry)
        register_build_info(registry, "1.2.3")
        expected = {
            _family_name(name, kind): kind
            for table in (CONTRACT[component], CONTRACT["all"])
            for name, (kind, _labels) in table.items()
        }
        assert _registered_types(registry) == expected, component


def test_only_bronze_freshness_is_exported_by_two_components() -> None:
    """The loader reports freshness after each load, the monitor between loads and while the loader is down;
    any other name shared by two components would be a collision on a dashboard."""
    owners: dict[str, list[str]] = {}
    for component in COMPONENTS:
        for name in CONTRACT[component]:
            owners.setdefault(name, []).append(component)
    shared = {name: sorted(who) for name, who in owners.items() if len(who) > 1}
    assert shared == {"cdcflow_bronze_freshness_seconds": ["loader", "monitor"]}


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_every_metric_takes_exactly_the_contract_labels(component: str) -> None:
    registry = new_registry(with_process_metrics=False)
    metrics = _metrics_of(COMPONENTS[component](registry))
    contract = CONTRACT[component]
    by_family = {_family_name(name, kind): name for name, (kind, _labels) in contract.items()}
    assert sorted(_family_of(m) for m in metrics) == sorted(by_family)
    for metric in metrics:
        name = by_family[_family_of(metric)]
        kind, label_names = contract[name]
        labels = {label: f"v-{label}" for label in label_names}
        if labels:
            metric.labels(**labels)  # raises ValueError on any other label names
        assert registry.get_sample_value(_sample_name(name, kind), labels) == 0, name


def test_build_info_carries_the_version() -> None:
    registry = new_registry(with_process_metrics=False)
    register_build_info(registry, "1.2.3")
    assert registry.get_sample_value("cdcflow_build_info", {"version": "1.2.3"}) == 1


def test_new_registry_adds_the_default_collectors_only_on_request() -> None:
    with_defaults = _registered_types(new_registry())
    assert with_defaults["python_info"] == "gauge"
    assert with_defaults["python_gc_objects_collected"] == "counter"
    if sys.platform.startswith("linux"):
        assert with_defaults["process_cpu_seconds"] == "counter"
    assert _registered_types(new_registry(with_process_metrics=False)) == {}


def test_counters_and_gauges_record_what_is_observed() -> None:
    registry = new_registry(with_process_metrics=False)
    writer = WriterMetrics(registry)
    writer.records_consumed.labels(topic="cdc.public.customers", partition=3).inc(5)
    writer.records_consumed.labels(topic="cdc.public.customers", partition=3).inc()
    writer.records_dlq.labels(topic="cdc.public.customers", reason="decode").inc()
    writer.buffered_bytes.set(4096)
    labels = {"topic": "cdc.public.customers", "partition": "3"}
    assert registry.get_sample_value("cdcflow_records_consumed_total", labels) == 6
    assert registry.get_sample_value("cdcflow_records_dlq_total", {"topic": labels["topic"], "reason": "decode"}) == 1
    assert registry.get_sample_value("cdcflow_buffered_bytes") == 4096


def test_histograms_record_observations_into_their_buckets() -> None:
    registry = new_registry(with_process_metrics=False)
    writer = WriterMetrics(registry)
    writer.flush_duration.labels(table="public.customers").observe(0.2)
    writer.flush_duration.labels(table="public.customers").observe(3)
    writer.commit_duration.observe(0.004)
    table = {"table": "public.customers"}
    assert registry.get_sample_value("cdcflow_flush_duration_seconds_count", table) == 2
    assert registry.get_sample_value("cdcflow_flush_duration_seconds_sum", table) == pytest.approx(3.2)
    assert registry.get_sample_value("cdcflow_flush_duration_seconds_bucket", {**table, "le": "0.25"}) == 1
    assert registry.get_sample_value("cdcflow_flush_duration_seconds_bucket", {**table, "le": "60.0"}) == 2
    assert registry.get_sample_value("cdcflow_commit_duration_seconds_bucket", {"le": "0.005"}) == 1


def _flush_duration(registry: CollectorRegistry) -> Histogram:
    return WriterMetrics(registry).flush_duration.labels(table="t")


def _flush_records(registry: CollectorRegistry) -> Histogram:
    return WriterMetrics(registry).flush_records.labels(table="t")


def _commit_duration(registry: CollectorRegistry) -> Histogram:
    return WriterMetrics(registry).commit_duration


def _loader_batch_duration(registry: CollectorRegistry) -> Histogram:
    return LoaderMetrics(registry).batch_duration.labels(table="t")


@pytest.mark.parametrize(
    ("histogram", "name", "lowest", "highest"),
    [
        (_flush_duration, "cdcflow_flush_duration_seconds", "0.005", "60.0"),
        (_flush_records, "cdcflow_flush_records", "1.0", "1e+06"),
        (_commit_duration, "cdcflow_commit_duration_seconds", "0.001", "10.0"),
        (_loader_batch_duration, "cdcflow_loader_batch_duration_seconds", "0.1", "600.0"),
    ],
)
def test_histogram_buckets_span_the_documented_range(
    histogram: Callable[[CollectorRegistry], Histogram], name: str, lowest: str, highest: str
) -> None:
    registry = new_registry(with_process_metrics=False)
    histogram(registry).observe(0)
    bounds = [s.labels["le"] for family in registry.collect() for s in family.samples if s.name == f"{name}_bucket"]
    assert bounds[0] == lowest
    assert bounds[-2:] == [highest, "+Inf"]


def test_two_registries_do_not_collide() -> None:
    first, second = new_registry(with_process_metrics=False), new_registry(with_process_metrics=False)
    writer_a, writer_b = WriterMetrics(first), WriterMetrics(second)
    writer_a.records_written.labels(table="public.customers").inc(7)
    writer_b.records_written.labels(table="public.customers").inc(2)
    assert first.get_sample_value("cdcflow_records_written_total", {"table": "public.customers"}) == 7
    assert second.get_sample_value("cdcflow_records_written_total", {"table": "public.customers"}) == 2


def test_one_registry_refuses_a_second_copy() -> None:
    registry = new_registry(with_process_metrics=False)
    LoaderMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        LoaderMetrics(registry)


def test_forget_partition_removes_only_that_partitions_lag() -> None:
    registry = new_registry(with_process_metrics=False)
    writer = WriterMetrics(registry)
    for partition in (0, 1):
        labels = {"group": "lake", "topic": "cdc.public.customers", "partition": partition}
        writer.consume_lag_records.labels(**labels).set(10 + partition)
        writer.consume_lag_seconds.labels(**labels).set(2.5)
    writer.forget_partition("lake", "cdc.public.customers", 0)
    gone = {"group": "lake", "topic": "cdc.public.customers", "partition": "0"}
    kept = {**gone, "partition": "1"}
    assert registry.get_sample_value("cdcflow_writer_consume_lag_records", gone) is None
    assert registry.get_sample_value("cdcflow_writer_consume_lag_seconds", gone) is None
    assert registry.get_sample_value("cdcflow_writer_consume_lag_records", kept) == 11
    assert registry.get_sample_value("cdcflow_writer_consume_lag_seconds", kept) == 2.5
    writer.forget_partition("lake", "cdc.public.customers", 7)  # never reported: nothing to do, no error


def test_the_writer_no_longer_exports_the_groups_lag() -> None:
    """The group's lag (against the committed offset) belongs to cdcflow monitor alone."""
    registry = new_registry(with_process_metrics=False)
    WriterMetrics(registry)
    names = {family.name for family in registry.collect()}
    assert not {"cdcflow_consumer_lag_records", "cdcflow_consumer_lag_seconds"} & names
