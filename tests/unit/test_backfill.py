"""Backfill signals: one id per request, include lists, and the status folded from Debezium's notifications."""

from __future__ import annotations

import json
import re
from pathlib import Path

from services.common.settings import load_settings, repo_root
from services.stack.backfill import (
    Snapshot,
    apply_notification,
    in_order,
    signal_id,
    widened,
    write_connector_settings,
)
from services.stack.connect import captured


def test_the_same_request_gives_the_same_signal_id_and_again_a_new_one() -> None:
    first = signal_id(["lending.extra", "lending.other"], "id > 5")
    assert first == signal_id(["lending.other", "lending.extra"], "id > 5")
    assert first != signal_id(["lending.other", "lending.extra"], "id > 6")
    assert first != signal_id(["lending.extra"], "id > 5")
    assert first != signal_id(["lending.extra", "lending.other"], "id > 5", again=True)


def test_a_table_created_again_under_its_name_gets_a_new_signal_id() -> None:
    """`source add-table` of a table dropped and created again must snapshot the new table's rows."""
    first = signal_id(["lending.extra"], None, oids={"lending.extra": 16_384})
    assert first == signal_id(["lending.extra"], None, oids={"lending.extra": 16_384})
    assert first != signal_id(["lending.extra"], None, oids={"lending.extra": 16_990})
    both = signal_id(["lending.a", "lending.b"], None, oids={"lending.a": 1, "lending.b": 2})
    assert both == signal_id(["lending.b", "lending.a"], None, oids={"lending.b": 2, "lending.a": 1})
    assert len(first) <= 64  # the signal table's id column


def test_captured_follows_debeziums_whole_match_of_the_include_lists() -> None:
    config = {"schema.include.list": "lending,cdcflow", "table.include.list": r"lending\.cust.*,cdcflow\.heartbeat"}
    assert captured(config, "lending.customers")
    assert not captured(config, "lending.facilities")
    assert not captured(config, "shop.customers")
    assert captured({}, "any.table")  # no lists: every table
    excluding = {"schema.exclude.list": "audit", "table.exclude.list": r"lending\.tmp_.*"}
    assert captured(excluding, "lending.customers")
    assert not captured(excluding, "lending.tmp_load")
    assert not captured(excluding, "audit.events")


def test_widened_adds_the_table_and_its_schema_once() -> None:
    config = {"schema.include.list": "lending,cdcflow", "table.include.list": r"lending\.customers,cdcflow\.heartbeat"}
    wider = widened(config, "shop.order_lines")
    assert wider["table.include.list"] == r"lending\.customers,cdcflow\.heartbeat,shop\.order_lines"
    assert wider["schema.include.list"] == "lending,cdcflow,shop"
    assert captured(wider, "shop.order_lines")
    assert widened(config, "lending.facilities")["schema.include.list"] == "lending,cdcflow"
    assert "table.include.list" not in widened({}, "a.b")  # every table is captured already


def _note(kind: str, ts: int, **extra: str) -> dict[str, object]:
    data = {"connector_name": "lending", **extra}
    return {
        "id": "sig",
        "type": kind,
        "aggregate_type": "Incremental Snapshot",
        "additional_data": data,
        "timestamp": ts,
    }


def test_status_folds_notifications_into_progress_and_rows_per_table() -> None:
    snapshots = {"sig": Snapshot("sig", tables="lending.a,lending.b")}
    apply_notification(snapshots, _note("STARTED", 1, data_collections="lending.a,lending.b"))
    apply_notification(
        snapshots,
        _note(
            "IN_PROGRESS", 2, current_collection_in_progress="lending.a", last_processed_key="2048", maximum_key="5000"
        ),
    )
    snap = snapshots["sig"]
    assert (snap.state, snap.current, snap.last_key, snap.max_key) == ("IN_PROGRESS", "lending.a", "2048", "5000")
    apply_notification(
        snapshots, _note("TABLE_SCAN_COMPLETED", 3, scanned_collection="lending.a", total_rows_scanned="5000")
    )
    apply_notification(
        snapshots, _note("TABLE_SCAN_COMPLETED", 4, scanned_collection="lending.b", total_rows_scanned="0")
    )
    apply_notification(snapshots, _note("COMPLETED", 5))
    assert snap.as_dict() == {
        "id": "sig",
        "state": "COMPLETED",
        "tables": "lending.a,lending.b",
        "current": "",
        "last_key": "",
        "max_key": "5000",
        "rows": {"lending.a": 5000, "lending.b": 0},
        "updated_ms": 5,
    }


def test_the_primary_connector_has_a_signal_table_and_a_notification_topic() -> None:
    config = json.loads((repo_root() / "connect" / "connectors" / "lending.json").read_text())["config"]
    assert config["signal.data.collection"] == "cdcflow.debezium_signal"
    assert "source" in config["signal.enabled.channels"].split(",")
    assert config["notification.enabled.channels"] == "sink"
    assert config["notification.sink.topic.name"].startswith("_cdcflow.notifications.")
    schema_sql = (repo_root() / "services" / "stack" / "capture.sql").read_text()
    assert re.search(r"create table if not exists cdcflow\.debezium_signal", schema_sql)


def test_the_connector_file_keeps_the_widened_lists_and_everything_else(tmp_path: Path) -> None:
    (tmp_path / "connectors").mkdir()
    original = json.loads((repo_root() / "connect" / "connectors" / "lending.json").read_text())
    path = tmp_path / "connectors" / "lending.json"
    path.write_text(json.dumps(original, indent=2))
    settings = load_settings({"CDCFLOW_STACK__CONNECT_DIR": str(tmp_path)})
    lists = {k: v for k, v in widened(original["config"], "audit.events").items() if k.endswith("include.list")}
    write_connector_settings(settings, "lending", lists)
    written = json.loads(path.read_text())
    assert written["config"]["table.include.list"] == original["config"]["table.include.list"] + r",audit\.events"
    assert written["config"]["schema.include.list"] == "lending,cdcflow,audit"
    assert written["config"]["database.password"] == "${env:CDCFLOW_POSTGRES__PASSWORD}"  # never resolved
    rest = {k: v for k, v in written["config"].items() if not k.endswith("include.list")}
    assert rest == {k: v for k, v in original["config"].items() if not k.endswith("include.list")}
    write_connector_settings(settings, "unfiled", {"table.include.list": "x"})  # no file: nothing written
    assert sorted(p.name for p in (tmp_path / "connectors").iterdir()) == ["lending.json"]


def test_a_stop_ends_the_running_snapshot_aborted() -> None:
    snapshots = {"old": Snapshot("old", state="COMPLETED", updated_ms=1), "sig": Snapshot("sig")}
    apply_notification(snapshots, _note("STARTED", 2))
    apply_notification(
        snapshots,
        _note("IN_PROGRESS", 3, current_collection_in_progress="lending.a", last_processed_key="10", maximum_key="99"),
    )
    # Debezium's ABORTED carries an id of its own, then the snapshot reports COMPLETED
    for note in in_order([_note("COMPLETED", 4), {**_note("ABORTED", 4), "id": "3b1b94a1-stop"}]):
        apply_notification(snapshots, note)
    assert sorted(snapshots) == ["old", "sig"]
    snap = snapshots["sig"]
    assert (snap.state, snap.current, snap.rows) == ("ABORTED", "", {})
    assert snapshots["old"].state == "COMPLETED"


def test_a_snapshot_stopped_within_the_millisecond_it_started_ends_aborted() -> None:
    """STARTED, the stop's ABORTED and COMPLETED sharing a timestamp: one snapshot, ABORTED, whatever order
    the topic's partitions gave them in."""
    notes = [_note("COMPLETED", 7), {**_note("ABORTED", 7), "id": "stop-1"}, _note("STARTED", 7)]
    for shuffled in (notes, notes[::-1], [notes[1], notes[0], notes[2]]):
        snapshots = {"old": Snapshot("old", state="COMPLETED", updated_ms=1), "sig": Snapshot("sig")}
        for note in in_order(shuffled):
            apply_notification(snapshots, note)
        assert sorted(snapshots) == ["old", "sig"]
        assert snapshots["sig"].state == "ABORTED"


def test_a_completed_without_the_snapshots_id_after_a_stop_adds_no_snapshot() -> None:
    """A stop mid-scan clears the snapshot's correlation id; the COMPLETED sent after it has a random id."""
    snapshots = {"old": Snapshot("old", state="COMPLETED", updated_ms=1), "sig": Snapshot("sig")}
    notes = [
        _note("STARTED", 2),
        _note("IN_PROGRESS", 3, current_collection_in_progress="extra.a", last_processed_key="9", maximum_key="99"),
        _note("TABLE_SCAN_COMPLETED", 4, scanned_collection="extra.a", total_rows_scanned="9"),
        _note("ABORTED", 4),
        {**_note("COMPLETED", 5), "id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"},
    ]
    for note in in_order(notes):
        apply_notification(snapshots, note)
    assert sorted(snapshots) == ["old", "sig"]
    assert snapshots["sig"].state == "ABORTED"
    assert snapshots["old"].state == "COMPLETED"


def test_a_stop_whose_abort_comes_a_millisecond_after_the_stopped_snapshots_completed() -> None:
    """Debezium sends the stopped snapshot's COMPLETED first, then the ABORTED with a random id: on a busy
    host they fall into two milliseconds. A snapshot that completed its scans is not taken for stopped."""
    snapshots = {"old": Snapshot("old"), "sig": Snapshot("sig")}
    done = [
        {**_note("STARTED", 1, data_collections="extra.a"), "id": "old"},
        {**_note("TABLE_SCAN_COMPLETED", 2, scanned_collection="extra.a", total_rows_scanned="5"), "id": "old"},
        {**_note("COMPLETED", 2), "id": "old"},
    ]
    stopped = [
        _note("STARTED", 3, data_collections="extra.a"),
        _note("IN_PROGRESS", 4, current_collection_in_progress="extra.a", last_processed_key="9", maximum_key="99"),
        _note("COMPLETED", 5),
        {**_note("ABORTED", 6, data_collections="extra.a"), "id": "6d1c6f52-0b7e-4c55-9a43-6c3f4bb2a8e1"},
    ]
    for note in in_order(done + stopped):
        apply_notification(snapshots, note)
    assert sorted(snapshots) == ["old", "sig"]
    assert (snapshots["old"].state, snapshots["sig"].state) == ("COMPLETED", "ABORTED")
    # an ABORTED of an unknown id when nothing runs or was cut short is a snapshot of its own
    apply_notification(snapshots, {**_note("ABORTED", 9), "id": "lone-stop"})
    assert snapshots["old"].state == "COMPLETED"
    assert snapshots["lone-stop"].state == "ABORTED"
