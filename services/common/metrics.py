"""Every Prometheus metric cdcflow exports, defined in this one module.

The names, types and label names are a contract (DESIGN.md, "Operations"): the Grafana dashboards and the
alert rules in ``deploy/`` are built on them, so a rename here must ship together with those. Keeping every
definition in one place makes such a change one diff, and makes the contract testable in one test.

Metrics are grouped per component, one class each. A class registers its metrics on the
:class:`~prometheus_client.CollectorRegistry` it is given instead of the global default registry, so every
test can use a private registry and read values back with ``registry.get_sample_value``, and two instances
never collide. Call sites use the typed attributes (``metrics.records_consumed.labels(topic=t,
partition=p).inc()``), never a lookup by metric name.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

__all__ = [
    "COMMIT_DURATION_BUCKETS",
    "FLUSH_DURATION_BUCKETS",
    "FLUSH_RECORDS_BUCKETS",
    "LOADER_BATCH_DURATION_BUCKETS",
    "EnricherMetrics",
    "LoaderMetrics",
    "MonitorMetrics",
    "TransformMetrics",
    "WriterMetrics",
    "new_registry",
    "register_build_info",
]

# Histogram buckets. Every bucket is one time series per label set (per table for most of them), so each
# list is a short, roughly logarithmic ladder over the range that matters; +Inf is added implicitly.

#: Writing and uploading one Parquet file: a few milliseconds for a small local file, up to tens of seconds
#: for a large batch uploaded to GCS. Anything above a minute is an incident, and +Inf catches it.
FLUSH_DURATION_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

#: Records in one partition's flush: a single record when age flushes an idle partition, up to the row limit of
#: the flush policy for a busy one (10^6 is well above any sensible row limit).
FLUSH_RECORDS_BUCKETS: tuple[float, ...] = (1, 10, 50, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1e6)

#: A synchronous offset commit: about a broker round trip (milliseconds); seconds mean a slow or
#: failing-over group coordinator.
COMMIT_DURATION_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: One loader micro-batch (stage, dedup insert, manifest, commit): sub-second on DuckDB, minutes for a
#: BigQuery load job; ten minutes is the end of the useful range.
LOADER_BATCH_DURATION_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

_PARTITION = ("group", "topic", "partition")


class WriterMetrics:
    """The lake writer: consumption, lag, flushes, commits, rebalances and backpressure."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records_consumed = Counter(
            "cdcflow_records_consumed_total", "Records polled from Kafka.", ("topic", "partition"), registry=registry
        )
        self.records_written = Counter(
            "cdcflow_records_written_total", "Records written to the lake.", ("table",), registry=registry
        )
        self.records_dlq = Counter(
            "cdcflow_records_dlq_total",
            "Records sent to the dead-letter topic.",
            ("topic", "reason"),
            registry=registry,
        )
        self.tombstones_skipped = Counter(
            "cdcflow_tombstones_skipped_total", "Tombstones (null values) skipped.", ("topic",), registry=registry
        )
        # What this writer has still to *read*, not what its group has committed: the group's lag (against
        # the committed offset, surviving the writer's death) is cdcflow monitor's cdcflow_consumer_lag_*.
        self.consume_lag_records = Gauge(
            "cdcflow_writer_consume_lag_records",
            "High watermark minus this writer's consumed position (records it has not yet read).",
            _PARTITION,
            registry=registry,
        )
        self.consume_lag_seconds = Gauge(
            "cdcflow_writer_consume_lag_seconds",
            "Seconds since the newest record this writer has read was written, while it has records left to read.",
            _PARTITION,
            registry=registry,
        )
        self._init_flush(registry)
        self._init_group(registry)

    def _init_flush(self, registry: CollectorRegistry) -> None:
        self.flush_duration = Histogram(
            "cdcflow_flush_duration_seconds",
            "Time to write one partition's flush to the lake (its files: one per event hour, usually one).",
            ("table",),
            buckets=FLUSH_DURATION_BUCKETS,
            registry=registry,
        )
        self.flush_records = Histogram(
            "cdcflow_flush_records",
            "Records in one partition's flush (its files: one per event hour, usually one).",
            ("table",),
            buckets=FLUSH_RECORDS_BUCKETS,
            registry=registry,
        )
        self.lake_files_written = Counter(
            "cdcflow_lake_files_written_total", "Lake files written.", ("table",), registry=registry
        )
        self.lake_bytes_written = Counter(
            "cdcflow_lake_bytes_written_total", "Bytes of lake files written.", ("table",), registry=registry
        )
        self.schema_changes = Counter(
            "cdcflow_schema_changes_total", "Schema changes seen in the stream.", ("table", "kind"), registry=registry
        )

    def _init_group(self, registry: CollectorRegistry) -> None:
        self.commit_duration = Histogram(
            "cdcflow_commit_duration_seconds",
            "Time of one synchronous offset commit.",
            buckets=COMMIT_DURATION_BUCKETS,
            registry=registry,
        )
        self.rebalances = Counter(
            "cdcflow_rebalances_total", "Rebalance callbacks (assigned, revoked, lost).", ("kind",), registry=registry
        )
        self.buffered_bytes = Gauge("cdcflow_buffered_bytes", "Bytes buffered, not yet in the lake.", registry=registry)
        self.paused_partitions = Gauge(
            "cdcflow_paused_partitions", "Partitions paused by backpressure.", registry=registry
        )

    def forget_partition(self, group: str, topic: str, partition: int) -> None:
        """Drop a partition's lag series once it is revoked or lost.

        Another consumer reports that partition from now on; a series left here would keep its last value
        forever, so dashboards would sum stale lag and alerts would fire on a partition nobody owns here.
        Counters keep their series: a counter that disappears and comes back looks like a reset, not a lie.
        """
        for gauge in (self.consume_lag_records, self.consume_lag_seconds):
            gauge.remove(group, topic, str(partition))


class EnricherMetrics:
    """The enricher: what it consumed, produced and dead-lettered, what it holds, its tables' progress."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records_consumed = Counter(
            "cdcflow_enricher_records_consumed_total",
            "Transaction changes read.",
            ("topic", "partition"),
            registry=registry,
        )
        self.records_produced = Counter(
            "cdcflow_enricher_records_produced_total",
            "Enriched records produced, by what released them (the watermark or the bounded wait).",
            ("released_by",),
            registry=registry,
        )
        self.sides_unjoined = Counter(
            "cdcflow_enricher_sides_unjoined_total",
            "Enriched records produced with a side not joined (missing, deleted, expired).",
            ("side", "state"),
            registry=registry,
        )
        self.records_dlq = Counter(
            "cdcflow_enricher_records_dlq_total",
            "Records sent to the dead-letter topic.",
            ("topic", "reason"),
            registry=registry,
        )
        self._init_state(registry)

    def _init_state(self, registry: CollectorRegistry) -> None:
        self.table_changes = Counter(
            "cdcflow_enricher_table_changes_total",
            "Customer and facility changes read into the table store, by outcome (stored, known, rejected).",
            ("table", "outcome"),
            registry=registry,
        )
        self.held_records = Gauge(
            "cdcflow_enricher_held_records", "Transaction changes waiting for the table sides.", registry=registry
        )
        self.watermark_lsn = Gauge(
            "cdcflow_enricher_watermark_lsn",
            "The LSN up to which a table side is known (its topic read so far, heartbeats for idle partitions).",
            ("table",),
            registry=registry,
        )
        self.transaction_duration = Histogram(
            "cdcflow_enricher_transaction_duration_seconds",
            "Committing one Kafka transaction (records, DLQ records and input offsets).",
            buckets=COMMIT_DURATION_BUCKETS,
            registry=registry,
        )
        self.transactions = Counter(
            "cdcflow_enricher_transactions_total", "Kafka transactions by outcome.", ("outcome",), registry=registry
        )


class LoaderMetrics:
    """The lake → bronze loader: throughput, backlog, failures and freshness per table."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows_loaded = Counter(
            "cdcflow_loader_rows_loaded_total", "Rows inserted into bronze.", ("table",), registry=registry
        )
        self.files_loaded = Counter(
            "cdcflow_loader_files_loaded_total", "Lake files loaded into bronze.", ("table",), registry=registry
        )
        self.batch_duration = Histogram(
            "cdcflow_loader_batch_duration_seconds",
            "Time to load one micro-batch.",
            ("table",),
            buckets=LOADER_BATCH_DURATION_BUCKETS,
            registry=registry,
        )
        self._init_state(registry)

    def _init_state(self, registry: CollectorRegistry) -> None:
        self.pending_files = Gauge(
            "cdcflow_loader_pending_files", "Lake files not yet loaded.", ("table",), registry=registry
        )
        self.pending_bytes = Gauge(
            "cdcflow_loader_pending_bytes", "Bytes of lake files not yet loaded.", ("table",), registry=registry
        )
        self.last_success = Gauge(
            "cdcflow_loader_last_success_timestamp_seconds",
            "Unix time of the last successful load.",
            ("table",),
            registry=registry,
        )
        self.failures = Counter(
            "cdcflow_loader_failures_total",
            "Failed loads (terminal or transient).",
            ("table", "kind"),
            registry=registry,
        )
        self.bronze_freshness = Gauge(
            "cdcflow_bronze_freshness_seconds",
            "Now minus the newest _source_ts in bronze.",
            ("table",),
            registry=registry,
        )


class TransformMetrics:
    """The scheduled dbt runs (silver and gold).

    The duration is a gauge (the last run), not a histogram: runs are minutes apart, so a histogram would
    hold a handful of samples, and the table in DESIGN.md does not list it among the histograms.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter("cdcflow_transform_runs_total", "dbt runs by outcome.", ("status",), registry=registry)
        self.duration = Gauge("cdcflow_transform_duration_seconds", "Duration of the last dbt run.", registry=registry)
        self.last_success = Gauge(
            "cdcflow_transform_last_success_timestamp_seconds",
            "Unix time of the last successful dbt run.",
            registry=registry,
        )
        self.dbt_test_failures = Gauge(
            "cdcflow_dbt_test_failures", "Failing dbt tests of the last run.", ("model",), registry=registry
        )


class MonitorMetrics:
    """``cdcflow monitor``: what it sees of Kafka, PostgreSQL, Connect, the warehouse, dbt and the DLQ.

    The consumer lag lives here, not in the writer: it is measured against the *committed* offset from
    outside the workers, so a dead writer's lag keeps its series and keeps growing.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._init_lag(registry)
        self._init_slots(registry)
        self._init_pipeline(registry)
        self._init_self(registry)

    def _init_lag(self, registry: CollectorRegistry) -> None:
        self.lag_records = Gauge(
            "cdcflow_consumer_lag_records",
            "High watermark minus the group's committed offset (minus the log start when nothing is committed).",
            _PARTITION,
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "cdcflow_consumer_lag_seconds",
            "Age of the oldest record the group has not committed; 0 only when nothing is uncommitted.",
            _PARTITION,
            registry=registry,
        )
        self.committed_offset = Gauge(
            "cdcflow_consumer_committed_offset", "The group's committed offset.", _PARTITION, registry=registry
        )
        self.end_offset = Gauge(
            "cdcflow_topic_end_offset", "The partition's high watermark.", ("topic", "partition"), registry=registry
        )

    def _init_slots(self, registry: CollectorRegistry) -> None:
        self.slot_retained_bytes = Gauge(
            "cdcflow_replication_slot_retained_bytes",
            "WAL bytes the slot holds back (current WAL position minus restart_lsn).",
            ("slot",),
            registry=registry,
        )
        self.slot_active = Gauge(
            "cdcflow_replication_slot_active",
            "1 when a client is streaming from the slot.",
            ("slot",),
            registry=registry,
        )
        self.slot_confirmed_flush_lag_bytes = Gauge(
            "cdcflow_replication_slot_confirmed_flush_lag_bytes",
            "Current WAL position minus the slot's confirmed_flush_lsn.",
            ("slot",),
            registry=registry,
        )
        self.slot_wal_status = Gauge(
            "cdcflow_replication_slot_wal_status",
            "1 for the slot's current wal_status (reserved, extended, unreserved, lost), 0 for the others.",
            ("slot", "status"),
            registry=registry,
        )

    def _init_pipeline(self, registry: CollectorRegistry) -> None:
        self.connector_up = Gauge(
            "cdcflow_connector_up", "1 when the connector is RUNNING.", ("connector",), registry=registry
        )
        self.connector_task_running = Gauge(
            "cdcflow_connector_task_running", "1 when the task is RUNNING.", ("connector", "task"), registry=registry
        )
        self.unpublished_tables = Gauge(
            "cdcflow_source_unpublished_tables",
            "Tables the connector's include lists take that its publication lacks: none of their changes are captured.",
            ("connector",),
            registry=registry,
        )
        self.unloadable_types = Gauge(
            "cdcflow_source_unloadable_types",
            "Types of the connector's source database that Debezium fails on when the connector's task starts (an"
            " enum with no label, a domain over an enum): the task then fails and nothing of the source is captured.",
            ("connector",),
            registry=registry,
        )
        self.unpublishable_tables = Gauge(
            "cdcflow_source_unpublishable_tables",
            "Tables the connector's include lists take that must not be captured as they are, by reason: unlogged"
            " and columns_differ_in_case (the connector then captures nothing), no_replica_identity (PostgreSQL"
            " refuses their UPDATE and DELETE), name_unroutable (a name that is not a plain identifier: changes"
            " reach another table's topic, or one the writer dead-letters), rows_hidden_by_policy (row-level"
            " security hides rows from the connector's snapshots).",
            ("connector", "reason"),
            registry=registry,
        )
        self.bronze_freshness = Gauge(
            "cdcflow_bronze_freshness_seconds",
            "Now minus the newest _source_ts in bronze.",
            ("table",),
            registry=registry,
        )
        self.bronze_last_load = Gauge(
            "cdcflow_bronze_last_load_timestamp_seconds",
            "Unix time of the newest load recorded in the load manifest.",
            ("table",),
            registry=registry,
        )
        self.transform_last_run = Gauge(
            "cdcflow_transform_last_run_timestamp_seconds",
            "Unix time the last transform run ended (0: no run recorded).",
            registry=registry,
        )
        self.transform_last_run_success = Gauge(
            "cdcflow_transform_last_run_success",
            "1 when the last transform run succeeded (0 also when none is recorded).",
            registry=registry,
        )
        self.dlq_records = Counter(
            "cdcflow_dlq_records_total",
            "DLQ records read by the monitor, by reason; each original record counted once.",
            ("group", "reason"),
            registry=registry,
        )
        self.dlq_depth = Gauge(
            "cdcflow_dlq_depth_records",
            "Records held in the group's DLQ topic (end minus start offsets).",
            ("group",),
            registry=registry,
        )

    def _init_self(self, registry: CollectorRegistry) -> None:
        self.probe_up = Gauge(
            "cdcflow_monitor_probe_up", "1 when the probe's last poll succeeded.", ("probe",), registry=registry
        )
        self.probe_duration = Gauge(
            "cdcflow_monitor_probe_duration_seconds",
            "Duration of the probe's last poll.",
            ("probe",),
            registry=registry,
        )


def register_build_info(registry: CollectorRegistry, version: str) -> Gauge:
    """Export ``cdcflow_build_info{version=...} 1`` so dashboards can show which release is running.

    A gauge fixed at 1 rather than an ``Info`` metric, so the label name is part of this module's contract
    and the type reads the same in both exposition formats.
    """
    build_info = Gauge("cdcflow_build_info", "The running cdcflow release; always 1.", ("version",), registry=registry)
    build_info.labels(version=version).set(1)
    return build_info


def new_registry(with_process_metrics: bool = True) -> CollectorRegistry:
    """A fresh registry, with the process, platform and GC collectors the default registry would have.

    Services use their own registry instead of the global one so that what ``/metrics`` serves is exactly
    what the service registered; tests pass ``with_process_metrics=False`` to keep samples deterministic.
    """
    registry = CollectorRegistry()
    if with_process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry
