"""The monitor's probes on real inputs: slot rows, DLQ records, a DuckDB warehouse, the transform's record."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import Message
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from services.common.contracts.catalog import HazardKind
from services.common.errors import ConfigError
from services.common.lake import open_lake
from services.common.metrics import MonitorMetrics, new_registry
from services.common.settings import LakeSettings, load_settings
from services.common.signals import Shutdown
from services.monitor.app import Monitor
from services.monitor.dlq import DlqCounter
from services.monitor.publications import report_unloadable_types, report_unpublishable, report_unpublished
from services.monitor.slots import SlotState, report_slots
from services.monitor.transform import TransformProbe
from services.monitor.warehouse import DuckDBBronze, WarehouseProbe, table_label
from services.monitor.wiring import build_probes
from services.transform.app import LastRun, write_last_run

SOURCE = "cdcflow.lending.transactions"
DLQ = "_cdcflow.dlq.cdcflow-lake-writer"


def _metrics() -> tuple[MonitorMetrics, CollectorRegistry]:
    registry = new_registry(with_process_metrics=False)
    return MonitorMetrics(registry), registry


def _wal_status(registry: CollectorRegistry, slot: str) -> dict[str, float | None]:
    get = registry.get_sample_value
    return {
        status: get("cdcflow_replication_slot_wal_status", {"slot": slot, "status": status})
        for status in ("reserved", "extended", "unreserved", "lost")
    }


def test_wal_status_switches_from_one_status_to_the_next() -> None:
    metrics, registry = _metrics()
    seen = report_slots(metrics, [SlotState("cdcflow_lending", True, "reserved", 4096, 1024)], set())
    assert _wal_status(registry, "cdcflow_lending") == {"reserved": 1, "extended": 0, "unreserved": 0, "lost": 0}
    seen = report_slots(metrics, [SlotState("cdcflow_lending", False, "unreserved", 9 << 30, 9 << 30)], seen)
    assert _wal_status(registry, "cdcflow_lending") == {"reserved": 0, "extended": 0, "unreserved": 1, "lost": 0}
    get = registry.get_sample_value
    assert get("cdcflow_replication_slot_active", {"slot": "cdcflow_lending"}) == 0
    assert get("cdcflow_replication_slot_retained_bytes", {"slot": "cdcflow_lending"}) == 9 << 30
    assert get("cdcflow_replication_slot_confirmed_flush_lag_bytes", {"slot": "cdcflow_lending"}) == 9 << 30


def test_unpublished_tables_are_counted_per_connector_and_a_gone_connector_loses_its_series() -> None:
    metrics, registry = _metrics()
    seen = report_unpublished(metrics, {"lending": ["lending.late"], "shop": []}, {})
    get = registry.get_sample_value
    assert (
        get("cdcflow_source_unpublished_tables", {"connector": "lending"}),
        get("cdcflow_source_unpublished_tables", {"connector": "shop"}),
    ) == (1, 0)
    seen = report_unpublished(metrics, {"lending": []}, seen)
    assert get("cdcflow_source_unpublished_tables", {"connector": "lending"}) == 0
    assert get("cdcflow_source_unpublished_tables", {"connector": "shop"}) is None  # its connector file is gone


def test_unpublishable_tables_are_counted_per_reason_and_a_gone_connector_loses_its_series() -> None:
    metrics, registry = _metrics()
    get = registry.get_sample_value
    found: dict[str, dict[str, HazardKind]] = {
        "lending": {"lending.log": "no_replica_identity", "lending.tags": "no_replica_identity"},
        "shop": {},
    }
    seen = report_unpublishable(metrics, {**found, "stage": {"stage.load": "unlogged"}}, {})
    metric = "cdcflow_source_unpublishable_tables"
    assert get(metric, {"connector": "lending", "reason": "no_replica_identity"}) == 2
    assert get(metric, {"connector": "lending", "reason": "unlogged"}) == 0
    assert get(metric, {"connector": "stage", "reason": "unlogged"}) == 1
    assert get("cdcflow_source_unpublished_tables", {"connector": "lending"}) is None  # its own gauge only
    report_unpublishable(metrics, {"lending": {}, "shop": {}}, seen)
    assert get(metric, {"connector": "lending", "reason": "no_replica_identity"}) == 0
    assert get(metric, {"connector": "stage", "reason": "unlogged"}) is None  # its connector file is gone


def test_unloadable_types_are_counted_per_connector_and_named_when_they_change() -> None:
    metrics, registry = _metrics()
    get = registry.get_sample_value
    metric = "cdcflow_source_unloadable_types"
    with capture_logs() as logs:
        seen = report_unloadable_types(metrics, {"lending": ["public.moody"], "shop": []}, {})
        assert (get(metric, {"connector": "lending"}), get(metric, {"connector": "shop"})) == (1, 0)
        seen = report_unloadable_types(metrics, {"lending": ["public.moody"], "shop": []}, seen)  # unchanged
        report_unloadable_types(metrics, {"lending": []}, seen)
    assert get(metric, {"connector": "lending"}) == 0
    assert get(metric, {"connector": "shop"}) is None  # its connector file is gone
    named = [(e["event"], e.get("types")) for e in logs if e["event"].startswith("monitor.types_")]
    assert named == [("monitor.types_unloadable", ["public.moody"]), ("monitor.types_loadable", None)]


def test_a_dropped_slot_loses_its_series() -> None:
    metrics, registry = _metrics()
    seen = report_slots(
        metrics, [SlotState("a", True, "reserved", 1, 1), SlotState("b", True, "extended", 2, 2)], set()
    )
    report_slots(metrics, [SlotState("b", True, "extended", 3, 3)], seen)
    assert _wal_status(registry, "a") == {"reserved": None, "extended": None, "unreserved": None, "lost": None}
    assert registry.get_sample_value("cdcflow_replication_slot_retained_bytes", {"slot": "a"}) is None
    assert _wal_status(registry, "b")["extended"] == 1


def _dlq_record(
    dlq_offset: int, source_offset: int | None, reason: str | None, *, replayed_from: str | None = None
) -> Message:
    headers: list[tuple[str, str | bytes | None]] = [("origin", b"\x00")]
    if replayed_from is not None:
        headers.append(("cdcflow.replayed.from", replayed_from.encode()))
    if reason is not None:
        headers.append(("cdcflow.error.reason", reason.encode()))
    if source_offset is not None:
        headers += [
            ("cdcflow.source.topic", SOURCE.encode()),
            ("cdcflow.source.partition", b"2"),
            ("cdcflow.source.offset", str(source_offset).encode()),
        ]
    return Message(topic=DLQ, partition=0, offset=dlq_offset, key=b"k", value=b"v", headers=headers)


def test_dlq_records_are_counted_once_per_original_coordinate_by_reason() -> None:
    counter = DlqCounter()
    first = [
        _dlq_record(0, 10, "malformed_json"),
        _dlq_record(1, 11, "wrong_type"),
        _dlq_record(2, 10, "malformed_json"),  # a killed writer's second copy of source offset 10
        _dlq_record(3, 12, "malformed_json"),
    ]
    assert counter.count("cdcflow-lake-writer", first) == {"malformed_json": 2, "wrong_type": 1}
    # a later poll: one more copy of 11, and a new record without a reason header
    later = [_dlq_record(4, 11, "wrong_type"), _dlq_record(5, 13, None)]
    assert counter.count("cdcflow-lake-writer", later) == {"unknown": 1}
    # another group's DLQ is its own: the same source coordinate counts there
    assert counter.count("cdcflow-demo", [_dlq_record(0, 10, "oversized")]) == {"oversized": 1}


def test_a_record_that_fails_again_after_a_replay_is_still_one_record() -> None:
    counter = DlqCounter()
    assert counter.count("g", [_dlq_record(0, 10, "schema_mismatch")]) == {"schema_mismatch": 1}
    # replayed, failed again: its source headers now name the replay topic, replayed.from the original
    again = _dlq_record(1, 0, "schema_mismatch", replayed_from=f"{SOURCE}:2:10")
    assert counter.count("g", [again]) == {}


def test_dlq_records_without_source_headers_are_told_apart_by_their_dlq_offset() -> None:
    counter = DlqCounter()
    records = [_dlq_record(7, None, "decoder_crash"), _dlq_record(8, None, "decoder_crash")]
    assert counter.count("g", records) == {"decoder_crash": 2}
    assert counter.count("g", records) == {}


class _Flaky:
    """A probe that fails every poll (a server that is down)."""

    name = "flaky"

    def poll(self) -> None:
        raise ConnectionError("refused")

    def close(self) -> None:
        pass


class _Counting:
    name = "counting"

    def __init__(self) -> None:
        self.polls = 0
        self.closed = False

    def poll(self) -> None:
        self.polls += 1

    def close(self) -> None:
        self.closed = True


def test_a_failing_probe_neither_stops_the_others_nor_the_monitor() -> None:
    registry = new_registry(with_process_metrics=False)
    shutdown = Shutdown()
    healthy = _Counting()
    monitor = Monitor([_Flaky(), healthy], MonitorMetrics(registry), shutdown, interval_s=0.05)
    thread = threading.Thread(target=monitor.run)
    thread.start()
    deadline = time.monotonic() + 10
    while healthy.polls < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert monitor.ready()
    assert monitor.live(stalled_after_s=5)
    shutdown.request()
    thread.join(10)
    assert not thread.is_alive()
    assert healthy.polls >= 5
    assert healthy.closed
    assert registry.get_sample_value("cdcflow_monitor_probe_up", {"probe": "flaky"}) == 0
    assert registry.get_sample_value("cdcflow_monitor_probe_up", {"probe": "counting"}) == 1
    assert registry.get_sample_value("cdcflow_monitor_probe_duration_seconds", {"probe": "counting"}) is not None


def _bronze(path: Path, newest: datetime, loaded: datetime) -> None:
    conn = duckdb.connect(str(path))
    conn.execute("create schema bronze")
    conn.execute("create table bronze.lending__customers (id bigint, _source_ts timestamptz)")
    conn.execute("insert into bronze.lending__customers values (1, ?), (2, ?)", [newest.replace(year=2020), newest])
    conn.execute(
        "create table bronze._cdcflow_load_manifest (load_id varchar, bronze_table varchar, lake_file varchar,"
        " lake_version varchar, rows bigint, loaded_at timestamptz)"
    )
    conn.execute(
        "insert into bronze._cdcflow_load_manifest values ('l1', 'lending__customers', 'f', 'v', 2, ?)", [loaded]
    )
    conn.close()


def test_bronze_freshness_and_last_load_come_from_a_read_only_look_at_the_warehouse(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    newest, loaded = datetime(2026, 12, 1, 12, 0, tzinfo=UTC), datetime(2026, 12, 1, 12, 5, tzinfo=UTC)
    _bronze(path, newest, loaded)
    metrics, registry = _metrics()
    now = [newest.timestamp() + 90]
    probe = WarehouseProbe(DuckDBBronze(path), metrics, clock=lambda: now[0])
    probe.poll()
    table = {"table": "lending.customers"}
    get = registry.get_sample_value
    assert get("cdcflow_bronze_freshness_seconds", table) == pytest.approx(90)
    assert get("cdcflow_bronze_last_load_timestamp_seconds", table) == loaded.timestamp()
    duckdb.connect(str(path)).close()  # the probe let go of the file: a writer can open it


def test_a_locked_warehouse_fails_the_probe_but_freshness_keeps_growing(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    newest = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    _bronze(path, newest, newest)
    metrics, registry = _metrics()
    now = [newest.timestamp() + 10]
    probe = WarehouseProbe(DuckDBBronze(path), metrics, clock=lambda: now[0])
    probe.poll()
    writer = duckdb.connect(str(path))  # this process holds it now; another process would get a lock error
    try:
        now[0] += 20
        probe.poll()  # nothing was written since the last read: the file is not opened, the answer stands
        writer.execute("insert into bronze.lending__customers values (3, ?)", [newest])  # a new commit
        now[0] += 30
        with pytest.raises(duckdb.Error):
            probe.poll()  # read-only and read-write connections of one process to one file conflict
    finally:
        writer.close()
    get = registry.get_sample_value
    assert get("cdcflow_bronze_freshness_seconds", {"table": "lending.customers"}) == pytest.approx(60)


def test_a_missing_warehouse_fails_the_probe_clearly(tmp_path: Path) -> None:
    metrics, _ = _metrics()
    with pytest.raises(FileNotFoundError, match="no warehouse"):
        WarehouseProbe(DuckDBBronze(tmp_path / "absent.duckdb"), metrics).poll()


def test_bronze_names_become_the_loaders_table_label() -> None:
    assert table_label("lending__customers") == "lending.customers"
    assert table_label("crm__public__users") == "crm__public__users"  # another source's table: whole
    assert table_label("lending__users__h0123456789ab") == "lending__users__h0123456789ab"  # a hashed name


def test_the_transforms_record_gives_the_last_run_and_its_outcome(tmp_path: Path) -> None:
    lake = open_lake(LakeSettings(), str(tmp_path / "lake"))
    metrics, registry = _metrics()
    probe = TransformProbe(open_lake(LakeSettings(), str(tmp_path / "lake")), metrics)
    probe.poll()  # no run yet: nothing to report, not a failure
    assert registry.get_sample_value("cdcflow_transform_last_run_timestamp_seconds") == 0
    write_last_run(lake, LastRun("failure", 1_795_000_000.5, 12.0))
    probe.poll()
    get = registry.get_sample_value
    assert get("cdcflow_transform_last_run_timestamp_seconds") == 1_795_000_000.5
    assert get("cdcflow_transform_last_run_success") == 0
    write_last_run(lake, LastRun("success", 1_795_000_300.0, 11.0))
    probe.poll()
    assert get("cdcflow_transform_last_run_timestamp_seconds") == 1_795_000_300.0
    assert get("cdcflow_transform_last_run_success") == 1


def test_the_probes_named_in_the_settings_each_once_in_order(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "CDCFLOW_MONITOR__PROBES": "transform, warehouse transform connect postgres",
            "CDCFLOW_STACK__STATE_DIR": str(tmp_path),
        }
    )
    probes = build_probes(settings, MonitorMetrics(new_registry(with_process_metrics=False)))
    assert [p.name for p in probes] == ["transform", "warehouse", "connect", "postgres"]


def test_an_unknown_probe_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="CDCFLOW_MONITOR__PROBES"):
        load_settings({"CDCFLOW_MONITOR__PROBES": "kafka lag"})
