"""The peer benchmark's pure parts: which events become rows, the Iceberg table's snapshot, the configs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.events import wait_until_settled
from bench.peer_bench import (
    PeerRun,
    Snapshot,
    connector_config,
    kept_events,
    table_columns,
    table_snapshot,
    worker_properties,
)

REPO = Path(__file__).resolve().parents[2]


def _event(op: str, *, before: object = None, after: object = None) -> bytes:
    source = {"schema": "lending", "table": "transactions", "lsn": 1}
    return json.dumps({"op": op, "before": before, "after": after, "source": source, "ts_ms": 1}).encode()


def test_kept_events_counts_row_images_over_repeated_samples() -> None:
    samples = [
        _event("c", after={"transaction_id": 1}),
        _event("u", before={"transaction_id": 2}, after={"transaction_id": 2}),
        _event("d", before={"transaction_id": 3}),
        _event("d", after={"transaction_id": 4}),  # a delete without a before image is dropped
        _event("r", after={"transaction_id": 5}),
    ]
    assert kept_events(samples, 5) == 4
    # 12 events: the samples twice (8 kept), then the first two again (2 kept)
    assert kept_events(samples, 12) == 10
    assert kept_events(samples, 4) == 3


def _write_table(table_dir: Path, version: int, snapshots: list[dict[str, object]], current: int | None) -> None:
    metadata = table_dir / "metadata"
    metadata.mkdir(parents=True, exist_ok=True)
    (metadata / "version-hint.text").write_text(f"{version}\n")
    body = {"format-version": 2, "current-snapshot-id": current, "snapshots": snapshots}
    (metadata / f"v{version}.metadata.json").write_text(json.dumps(body))


def test_table_snapshot_reads_the_current_snapshot_of_the_hinted_version(tmp_path: Path) -> None:
    older = {"snapshot-id": 7, "summary": {"total-records": "10", "total-data-files": "1"}}
    newer = {"snapshot-id": 9, "summary": {"total-records": "25", "total-data-files": "3"}}
    _write_table(tmp_path, 2, [older], 7)
    _write_table(tmp_path, 3, [older, newer], 9)
    assert table_snapshot(tmp_path) == Snapshot(records=25, data_files=3)
    (tmp_path / "metadata" / "version-hint.text").write_text("2")
    assert table_snapshot(tmp_path) == Snapshot(records=10, data_files=1)


def test_table_snapshot_is_none_before_the_first_commit(tmp_path: Path) -> None:
    assert table_snapshot(tmp_path) is None  # no table yet
    _write_table(tmp_path, 1, [], None)  # created, nothing committed
    assert table_snapshot(tmp_path) is None
    (tmp_path / "metadata" / "version-hint.text").write_text("")  # caught mid-write
    assert table_snapshot(tmp_path) is None


def test_table_columns_are_those_of_the_current_schema(tmp_path: Path) -> None:
    cdc = {"type": "struct", "fields": [{"id": 3, "name": "op", "required": False, "type": "string"}]}
    amount = {"id": 1, "name": "amount", "type": "double"}
    first = {"type": "struct", "schema-id": 0, "fields": [amount]}
    evolved = {"type": "struct", "schema-id": 1, "fields": [amount, {"id": 2, "name": "_cdc", "type": cdc}]}
    _write_table(tmp_path, 4, [], None)
    path = tmp_path / "metadata" / "v4.metadata.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "schemas": [first, evolved], "current-schema-id": 1}))
    assert table_columns(tmp_path) == {"amount": "double", "_cdc": "struct"}


def test_connector_config_writes_row_images_to_a_hadoop_catalog(tmp_path: Path) -> None:
    config = connector_config(
        topic="b.lending.transactions",
        control_topic="b.control",
        warehouse=tmp_path / "wh",
        bootstrap="127.0.0.1:19092",
        commit_interval_ms=10_000,
    )
    assert config["connector.class"] == "org.apache.iceberg.connect.IcebergSinkConnector"
    assert config["transforms.debezium.type"] == "org.apache.iceberg.connect.transforms.DebeziumTransform"
    assert config["iceberg.catalog.type"] == "hadoop"
    assert config["iceberg.catalog.warehouse"] == (tmp_path / "wh").as_uri()
    assert config["iceberg.tables.auto-create-enabled"] == "true"
    assert config["iceberg.control.commit.interval-ms"] == "10000"
    assert config["iceberg.tables.auto-create-props.write.format.default"] == "parquet"
    assert all(isinstance(v, str) for v in config.values())


def test_worker_properties_bind_loopback_and_read_schemaless_json(tmp_path: Path) -> None:
    text = worker_properties(
        bootstrap="127.0.0.1:19092", port=40123, offsets_file=tmp_path / "o", plugin_root=tmp_path, max_poll=20_000
    )
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert props["listeners"] == "http://127.0.0.1:40123"
    assert props["value.converter"] == "org.apache.kafka.connect.json.JsonConverter"
    assert props["value.converter.schemas.enable"] == "false"
    assert props["offset.storage.file.filename"] == str(tmp_path / "o")
    assert props["consumer.max.poll.records"] == "20000"
    # an idle sink task answers a commit request only from preCommit: once a second, not once a minute
    assert props["offset.flush.interval.ms"] == "1000"


def test_peer_cpu_is_net_of_the_idle_rate() -> None:
    run = PeerRun(raw_cpu_s=10.0, idle_cpu_per_s=0.05, wall_s=40.0, rows=1, data_files=1)
    assert run.cpu_s == pytest.approx(8.0)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_until_settled_waits_for_growth_then_quiet() -> None:
    clock = _Clock()
    sizes = iter([100, 100, 100, 150, 180, 200])

    def size() -> int:
        return next(sizes, 200)

    assert wait_until_settled(size, above=100, quiet_s=3.0, clock=clock, sleep=clock.sleep) == 200
    # the last change was seen at 2.5 s (the fifth sleep), then 3 s of quiet
    assert clock.now == pytest.approx(5.5)


def test_wait_until_settled_gives_up_with_the_last_size() -> None:
    clock = _Clock()
    assert wait_until_settled(lambda: 100, above=100, timeout_s=10.0, clock=clock, sleep=clock.sleep) == 100
    assert clock.now == pytest.approx(10.0)


def _dry_run(*targets: str) -> str:
    """Every recipe line make would run for ``targets`` with all of them out of date (nothing is run)."""
    done = subprocess.run(
        ["make", "-n", "-B", "-C", str(REPO), *targets], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_only_bench_peer_fetches_the_peer() -> None:
    """`make install`, `jars` and `test` must not download the Iceberg sink and Hadoop; `bench-peer` does."""
    assert "bench/peer/pom.xml" not in _dry_run("install", "jars", "test")
    assert "mvn -B -q -f bench/peer/pom.xml package" in _dry_run("bench-peer")
