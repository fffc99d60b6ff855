"""The Source dashboard: what the pipeline costs PostgreSQL (slot WAL) and whether capture runs at all
(connector and task state, Debezium's own lag from its JMX metrics on the Connect worker)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from deploy.grafana.common import (
    PanelBuilder,
    Query,
    Section,
    label_variable,
    new_dashboard,
    stat_panel,
    timeseries_panel,
)

__all__ = ["DEBEZIUM_METRICS", "source_dashboard"]

_SLOT = '{slot=~"$slot"}'
_CONNECTOR = '{connector=~"$connector"}'

#: Debezium's streaming metrics as the Connect worker's JMX exporter names them (connect/jmx-exporter.yml);
#: their ``connector`` label is Debezium's logical server name, the connector's topic prefix.
DEBEZIUM_METRICS = {
    "behind": "debezium_metrics_MilliSecondsBehindSource",
    "queue": "debezium_metrics_QueueRemainingCapacity",
    "since_event": "debezium_metrics_MilliSecondsSinceLastEvent",
}
_STREAMING = '{context="streaming"}'


def _slots() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "WAL retained by each slot",
            "Bytes of WAL PostgreSQL keeps for the slot (pg_current_wal_lsn - restart_lsn); it fills the "
            "source's disk when capture stops.",
            "bytes",
            Query(f"max by (slot) (cdcflow_replication_slot_retained_bytes{_SLOT})", "{{slot}}"),
        ),
        timeseries_panel(
            "Confirmed-flush lag",
            "Bytes between the server's WAL position and what the connector confirmed.",
            "bytes",
            Query(f"max by (slot) (cdcflow_replication_slot_confirmed_flush_lag_bytes{_SLOT})", "{{slot}}"),
        ),
        stat_panel(
            "Slot active",
            "1 while a client (the connector) streams from the slot.",
            "bool",
            Query(f"min by (slot) (cdcflow_replication_slot_active{_SLOT})", "{{slot}}"),
            width=12,
        ),
        stat_panel(
            "Slot WAL status",
            "pg_replication_slots.wal_status: reserved and extended are fine; unreserved and lost are not.",
            "bool",
            Query(f"max by (slot, status) (cdcflow_replication_slot_wal_status{_SLOT}) > 0", "{{slot}} {{status}}"),
            width=12,
        ),
    ]


def _connectors() -> list[PanelBuilder]:
    return [
        stat_panel(
            "Connector running",
            "1 when Connect reports the connector RUNNING.",
            "bool",
            Query(f"min by (connector) (cdcflow_connector_up{_CONNECTOR})", "{{connector}}"),
            width=6,
        ),
        stat_panel(
            "Tasks running",
            "1 per task Connect reports RUNNING.",
            "bool",
            Query(f"min by (connector, task) (cdcflow_connector_task_running{_CONNECTOR})", "{{connector}}/{{task}}"),
            width=6,
        ),
        stat_panel(
            "Tables not published",
            "Tables the connector's include lists take that its publication lacks (created after it started): "
            "none of their changes are captured. `cdcflow verify` names them.",
            "short",
            Query(f"max by (connector) (cdcflow_source_unpublished_tables{_CONNECTOR})", "{{connector}}"),
            width=4,
        ),
        stat_panel(
            "Tables that cannot be published",
            "Tables the connector's include lists take that must not be captured as they are: unlogged or with column "
            "names differing only in case (the connector then captures nothing), without a replica identity "
            "(PostgreSQL then refuses their UPDATE and DELETE), or with row-level security that hides rows from the "
            "connector's snapshots. The monitor logs their names.",
            "short",
            Query(
                f"max by (connector, reason) (cdcflow_source_unpublishable_tables{_CONNECTOR})",
                "{{connector}} {{reason}}",
            ),
            width=4,
        ),
        stat_panel(
            "Types that stop the connector",
            "Types of the source database Debezium fails on when the connector's task starts (an enum with no "
            "label, a domain over an enum): from that start on nothing of the source is captured. The monitor logs "
            "their names.",
            "short",
            Query(f"max by (connector) (cdcflow_source_unloadable_types{_CONNECTOR})", "{{connector}}"),
            width=4,
        ),
        stat_panel(
            "Connect worker scraped",
            "1 when Prometheus reaches the worker's JMX exporter.",
            "bool",
            Query('min by (instance) (up{job="connect"})', "{{instance}}"),
            width=4,
        ),
    ]


def _debezium() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "Debezium: behind the source",
            "Milliseconds between a change's commit in PostgreSQL and the connector reading it, per source "
            "(its topic prefix).",
            "ms",
            Query(f"max by (connector) ({DEBEZIUM_METRICS['behind']}{_STREAMING})", "{{connector}}"),
            width=8,
        ),
        timeseries_panel(
            "Debezium: queue remaining capacity",
            "Free slots in the connector's queue to Kafka; near 0 means Kafka or Connect cannot keep up.",
            "short",
            Query(f"min by (connector) ({DEBEZIUM_METRICS['queue']}{_STREAMING})", "{{connector}}"),
            width=8,
        ),
        timeseries_panel(
            "Debezium: since the last event",
            "Milliseconds since the connector read its last change (the heartbeat keeps it low when idle).",
            "ms",
            Query(f"max by (connector) ({DEBEZIUM_METRICS['since_event']}{_STREAMING})", "{{connector}}"),
            width=8,
        ),
    ]


def _monitor() -> list[PanelBuilder]:
    return [
        stat_panel(
            "Monitor probes up",
            "1 when cdcflow monitor's last poll of that system succeeded.",
            "bool",
            Query("min by (probe) (cdcflow_monitor_probe_up)", "{{probe}}"),
            width=12,
        ),
        timeseries_panel(
            "Monitor probe duration",
            "Seconds each probe of cdcflow monitor took.",
            "s",
            Query("max by (probe) (cdcflow_monitor_probe_duration_seconds)", "{{probe}}"),
        ),
    ]


def source_dashboard() -> dashboard.Dashboard:
    return new_dashboard(
        "cdcflow-source",
        "cdcflow / Source",
        "Replication slots, connector and task state, Debezium's lag, and cdcflow monitor's own probes.",
        [
            label_variable("slot", "Replication slot", "cdcflow_replication_slot_retained_bytes"),
            label_variable("connector", "Connector", "cdcflow_connector_up"),
        ],
        [
            Section("Replication slots", _slots()),
            Section("Connectors", _connectors()),
            Section("Debezium", _debezium()),
            Section("cdcflow monitor", _monitor()),
        ],
    )
