"""The scale benchmark's pure parts: the change plan, the bench connector, memory fields and the figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.capture import WriterRun, bench_connector, kib_field
from bench.scale_bench import ChangePlan, Shape, plan_changes, scale_figures

REPO = Path(__file__).resolve().parents[2]


def test_plan_spreads_the_changes_over_the_tables() -> None:
    plan = plan_changes(200_000, 200)
    assert (plan.inserts, plan.updates, plan.deletes) == (800, 150, 50)
    assert plan.changes == 200_000
    # one record per change, plus a tombstone per delete
    assert plan.records == 200 * (800 + 150 + 2 * 50)


def test_plan_keeps_every_table_busy_when_events_are_few() -> None:
    plan = plan_changes(100, 200)
    assert plan.inserts + plan.updates + plan.deletes == 20
    assert plan.deletes >= 1
    assert plan.inserts > plan.deletes


def test_change_plan_records_count_tombstones() -> None:
    assert ChangePlan(tables=2, inserts=10, updates=3, deletes=1).records == 2 * (10 + 3 + 2)


def _template() -> dict[str, str]:
    document = json.loads((REPO / "connect" / "connectors" / "lending.json").read_text())
    config: dict[str, str] = document["config"]
    return config


def test_bench_connector_has_its_own_slot_publication_prefix_and_partitions() -> None:
    config = bench_connector(_template(), prefix="bscale1", schema="bscale1", partitions=64, snapshot_mode="no_data")
    assert config["topic.prefix"] == config["slot.name"] == config["publication.name"] == "bscale1"
    assert config["schema.include.list"] == "bscale1"
    assert config["table.include.list"] == r"bscale1\..*"
    assert config["topic.creation.default.partitions"] == "64"
    assert config["snapshot.mode"] == "no_data"
    # the stack's heartbeat, signal table and notifications stay the stack source's own
    assert config["heartbeat.interval.ms"] == "0"
    assert not {"heartbeat.action.query", "signal.data.collection", "notification.sink.topic.name"} & set(config)
    # the events are those the stack's source sends: same converters and type handling
    for key in ("value.converter", "decimal.handling.mode", "time.precision.mode", "plugin.name"):
        assert config[key] == _template()[key]


def test_bench_connector_reports_its_snapshot_when_asked() -> None:
    config = bench_connector(
        _template(), prefix="p", schema="s", partitions=6, snapshot_mode="initial", notification_topic="p.notes"
    )
    assert config["notification.enabled.channels"] == "sink"
    assert config["notification.sink.topic.name"] == "p.notes"


def test_kib_field_reads_proc_status() -> None:
    status = "Name:\tpython\nVmHWM:\t  301234 kB\nVmRSS:\t  200000 kB\nThreads:\t9\n"
    assert kib_field(status, "VmHWM") == 301234
    assert kib_field(status, "VmRSS") == 200000
    assert kib_field(status, "VmSwap") == 0


def _run(cpu_s: float, peak: float) -> WriterRun:
    return WriterRun(cpu_s=cpu_s, wall_s=10.0, rss_at_start_mib=150.0, peak_rss_mib=peak)


def test_figures_compare_each_shape_with_the_median_of_the_one_table_runs() -> None:
    one, many = Shape(1, 6), Shape(200, 6)
    runs = [(one, 100_000, _run(1.0, 300)), (many, 100_000, _run(1.8, 400)), (one, 100_000, _run(1.4, 310))]
    figures = scale_figures(runs, buffer_mib=256, overhead_mib=256)
    assert figures["baseline_cpu_us_per_event"] == pytest.approx(12.0)
    assert [r["cost_vs_one_table"] for r in figures["runs"]] == [0.83, 1.5, 1.17]
    assert [(s["shape"], s["runs"], s["cost_vs_one_table"]) for s in figures["shapes"]] == [
        ("1x6", 2, 1.0),
        ("200x6", 1, 1.5),
    ]
    assert figures["cost_goal_met"] is True
    assert figures["rss_bound_mib"] == 512
    assert figures["rss_goal_met"] is True


def test_a_shape_is_judged_by_the_median_of_its_rounds_and_its_highest_peak() -> None:
    one, many = Shape(1, 6), Shape(20, 6)
    runs = [
        (one, 100_000, _run(1.0, 300)),
        (many, 100_000, _run(1.4, 320)),
        (one, 100_000, _run(1.0, 300)),
        (many, 100_000, _run(2.2, 330)),  # one slow run on a busy host
        (one, 100_000, _run(1.0, 300)),
        (many, 100_000, _run(1.45, 520)),
        (one, 100_000, _run(1.0, 300)),
    ]
    figures = scale_figures(runs, buffer_mib=256, overhead_mib=256)
    (twenty,) = [s for s in figures["shapes"] if s["shape"] == "20x6"]
    assert (twenty["runs"], twenty["cost_vs_one_table"], twenty["peak_rss_mib"]) == (3, 1.45, 520)
    assert figures["cost_goal_met"] is True  # the median, not the slow run
    assert figures["rss_goal_met"] is False  # any run over the bound misses it
    assert figures["worst_peak_rss_mib"] == 520


def test_figures_say_when_a_goal_is_missed() -> None:
    one, many = Shape(1, 6), Shape(20, 6)
    runs = [(one, 100_000, _run(1.0, 300)), (many, 100_000, _run(1.6, 600))]
    figures = scale_figures(runs, buffer_mib=256, overhead_mib=256)
    assert figures["cost_goal_met"] is False
    assert figures["worst_cost_vs_one_table"] == 1.6
    assert figures["rss_goal_met"] is False
    assert figures["worst_peak_rss_mib"] == 600
