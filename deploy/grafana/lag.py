"""The Lag dashboard: how far each consumer group is behind, in records and in seconds, and whether it is
catching up.

Lag comes from ``cdcflow monitor`` (high watermark - committed offset; age of the oldest uncommitted
record), which watches the groups from outside, so these panels keep their series when a writer dies.
The writer's own gauges (what it has *consumed*, not what is durable) are shown apart, below.
"""

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

__all__ = ["lag_dashboard"]

_SEL = '{group=~"$group", topic=~"$topic"}'
_PARTITION_LEGEND = "{{group}} {{topic}}/{{partition}}"
_TOPIC = '{topic=~"$topic"}'
_COMMITTED_RATE = f"sum by (group, topic) (rate(cdcflow_consumer_committed_offset{_SEL}[{RATE}]))"
_PRODUCED_RATE = f"sum by (topic) (rate(cdcflow_topic_end_offset{_TOPIC}[{RATE}]))"
# Records behind divided by how fast the gap closes (committed rate - produced rate). When the group is not
# gaining, the divisor is clamped to one record per thousand seconds, so "not catching up" reads as a huge
# estimate instead of vanishing from the graph.
_CATCH_UP = (
    f"sum by (group, topic) (cdcflow_consumer_lag_records{_SEL})"
    f" / clamp_min({_COMMITTED_RATE} - on (topic) group_left {_PRODUCED_RATE}, 0.001)"
)


def _now() -> list[PanelBuilder]:
    return [
        stat_panel(
            "Records behind",
            "High watermark minus committed offset, summed over the group's partitions.",
            "short",
            Query(f"sum by (group) (cdcflow_consumer_lag_records{_SEL})", "{{group}}"),
        ),
        stat_panel(
            "Oldest uncommitted record",
            "Age of the oldest record the group has not committed (0 only when nothing is uncommitted).",
            "s",
            Query(f"max by (group) (cdcflow_consumer_lag_seconds{_SEL})", "{{group}}"),
        ),
        stat_panel(
            "Catch-up estimate",
            "Records behind / (committed rate - produced rate); very large means the group is not gaining.",
            "s",
            Query(f"max by (group) ({_CATCH_UP})", "{{group}}"),
        ),
    ]


def _partitions() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "Lag in records per partition",
            "High watermark minus the group's committed offset, per partition.",
            "short",
            Query(f"max by (group, topic, partition) (cdcflow_consumer_lag_records{_SEL})", _PARTITION_LEGEND),
        ),
        timeseries_panel(
            "Lag in seconds per partition",
            "Age of the oldest uncommitted record, interpolated from offsets and their timestamps.",
            "s",
            Query(f"max by (group, topic, partition) (cdcflow_consumer_lag_seconds{_SEL})", _PARTITION_LEGEND),
        ),
        timeseries_panel(
            "Produced vs committed",
            "Records appended to the topics per second beside the group's committed progress and what the "
            "writers poll.",
            "recps",
            Query(_PRODUCED_RATE, "produced {{topic}}"),
            Query(_COMMITTED_RATE, "committed {{group}} {{topic}}"),
            Query(f"sum by (topic) (rate(cdcflow_records_consumed_total{_TOPIC}[{RATE}]))", "polled {{topic}}"),
        ),
        timeseries_panel(
            "Catch-up estimate per topic",
            "Seconds until the group reaches the end of the topic at the current rates.",
            "s",
            Query(_CATCH_UP, "{{group}} {{topic}}"),
        ),
    ]


def _writer() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "Writer: records not yet consumed",
            "The writer's own view: high watermark minus its consumed position. Records consumed but not yet "
            "in the lake are not counted here; the lag above counts them.",
            "short",
            Query(f"max by (group, topic, partition) (cdcflow_writer_consume_lag_records{_SEL})", _PARTITION_LEGEND),
            width=6,
        ),
        timeseries_panel(
            "Writer: age of the newest record consumed",
            "How old the last record the writer polled was when it polled it.",
            "s",
            Query(f"max by (group, topic, partition) (cdcflow_writer_consume_lag_seconds{_SEL})", _PARTITION_LEGEND),
            width=6,
        ),
        timeseries_panel(
            "Writer: buffered bytes",
            "Bytes held in memory per writer, not yet in the lake.",
            "bytes",
            Query("sum by (instance) (cdcflow_buffered_bytes)", "{{instance}}"),
            width=6,
        ),
        timeseries_panel(
            "Writer: paused partitions",
            "Partitions paused by backpressure (buffer full) per writer.",
            "short",
            Query("sum by (instance) (cdcflow_paused_partitions)", "{{instance}}"),
            width=6,
        ),
    ]


def lag_dashboard() -> dashboard.Dashboard:
    return new_dashboard(
        "cdcflow-lag",
        "cdcflow / Lag",
        "Consumer-group lag in records and seconds, from cdcflow monitor; the writer's own gauges below.",
        [
            label_variable("group", "Consumer group", "cdcflow_consumer_lag_records"),
            label_variable("topic", "Topic", 'cdcflow_consumer_lag_records{group=~"$group"}'),
        ],
        [
            Section("Now", _now()),
            Section("Per partition", _partitions()),
            Section("The writer's own gauges", _writer()),
        ],
    )
