"""The snapshot benchmark's pure parts: Debezium's snapshot window from its notifications, the stage shares."""

from __future__ import annotations

import json

import pytest

from bench.snapshot_bench import STAGES, debezium_window, stage_figures


def _note(kind: str, at_ms: int, aggregate: str = "Initial Snapshot") -> bytes:
    return json.dumps(
        {"id": "x", "aggregate_type": aggregate, "type": kind, "additional_data": {}, "timestamp": at_ms}
    ).encode()


def test_window_spans_started_to_completed() -> None:
    values = [
        _note("STARTED", 1_000_000),
        _note("IN_PROGRESS", 1_005_000),
        _note("TABLE_SCAN_COMPLETED", 1_060_000),
        _note("COMPLETED", 1_061_500),
    ]
    assert debezium_window(values) == (1_000.0, 1_061.5)


def test_window_ignores_other_notifications() -> None:
    values = [_note("STARTED", 5_000, aggregate="Incremental Snapshot"), _note("COMPLETED", 9_000, "Incremental")]
    assert debezium_window(values) == (None, None)


def test_window_without_completion_has_no_end() -> None:
    assert debezium_window([_note("STARTED", 2_000)]) == (2.0, None)


def test_stage_seconds_run_from_milestone_to_milestone() -> None:
    marks = {"debezium": 160.0, "writer": 165.0, "loader": 180.0, "dbt": 220.0, "verify": 260.0}
    figures = stage_figures(100.0, marks)
    assert figures["stage_s"] == {"debezium": 60.0, "writer": 5.0, "loader": 15.0, "dbt": 40.0, "verify": 40.0}
    assert figures["total_s"] == 160.0
    assert figures["to_silver_s"] == 120.0
    assert sum(figures["stage_share"].values()) == pytest.approx(1.0, abs=0.002)
    assert figures["stage_share"]["debezium"] == 0.375
    assert list(figures["stage_s"]) == list(STAGES)
