"""Against real lake files from the writer: bronze in DuckDB holds every Kafka coordinate exactly once."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import psycopg
import pyarrow.parquet as pq
import pytest

from services.common.settings import Settings, load_settings
from services.common.signals import Shutdown
from services.loader.__main__ import run_loader
from services.stack.workload import Workload
from tests.fixtures.pipeline import (
    WriterProcess,
    partition_ends,
    read_lake_table,
    wait_until,
    wait_until_committed,
)

Conn = psycopg.Connection[tuple[object, ...]]
TABLES = ("customers", "facilities", "transactions")


def _loader_env(writer: WriterProcess, warehouse: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CDCFLOW_LAKE__ROOT": str(writer.lake_root),
        "CDCFLOW_WAREHOUSE__DUCKDB_PATH": str(warehouse),
        "CDCFLOW_LOADER__HEALTH_PORT": "0",
        "CDCFLOW_LOG__FORMAT": "json",
    }


def _load_once(writer: WriterProcess, warehouse: Path) -> int:
    return run_loader(load_settings(_loader_env(writer, warehouse)), Shutdown(), once=True)


def _drain(settings: Settings, writer: WriterProcess) -> None:
    """Run the writer until its group has committed the end of every captured topic, then stop it."""
    proc = writer.start()
    ends = partition_ends(settings, [f"{settings.kafka.topic_prefix}.lending.{t}" for t in TABLES])
    wait_until_committed(settings, writer.group, ends)
    assert writer.terminate(proc) == 0


def _bronze(warehouse: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def _lake_coordinates(writer: WriterProcess, prefix: str, table: str) -> set[tuple[str, int, int]]:
    rows = read_lake_table(writer.lake_root, prefix, f"lending.{table}")
    return set(
        zip(*(rows.column(c).to_pylist() for c in ("_kafka_topic", "_kafka_partition", "_kafka_offset")), strict=True)
    )


def _assert_bronze_equals_lake(writer: WriterProcess, warehouse: Path, prefix: str) -> None:
    for table in TABLES:
        expected = _lake_coordinates(writer, prefix, table)
        rows = _bronze(warehouse, f"select _kafka_topic, _kafka_partition, _kafka_offset from bronze.lending__{table}")
        assert len(rows) == len(set(rows)), f"a coordinate is in bronze.lending__{table} twice"
        assert set(rows) == expected, table


@pytest.fixture
def lake_with_changes(settings: Settings, pg: Conn, writer: WriterProcess) -> WriterProcess:
    Workload(settings.postgres, seed=11).run(rate=400, duration_s=3)
    _drain(settings, writer)
    return writer


def test_loading_twice_and_overwritten_files_keep_every_change_once(
    settings: Settings, lake_with_changes: WriterProcess, tmp_path: Path
) -> None:
    writer, warehouse, prefix = lake_with_changes, tmp_path / "wh.duckdb", settings.kafka.topic_prefix
    assert _load_once(writer, warehouse) == 0
    _assert_bronze_equals_lake(writer, warehouse, prefix)
    first = _bronze(warehouse, "select count(*), count(distinct _load_id) from bronze.lending__transactions")

    assert _load_once(writer, warehouse) == 0  # nothing new: nothing changes
    assert _bronze(warehouse, "select count(*), count(distinct _load_id) from bronze.lending__transactions") == first

    # the writer's crash case: a file rewritten with different content under the same name
    files = sorted((writer.lake_root / prefix / "lending.transactions").rglob("*.parquet"))
    assert len(files) >= 2
    rows = pq.read_table(files[0])
    rewritten = rows.slice(0, max(1, rows.num_rows // 2))  # cut differently
    buffer = io.BytesIO()
    pq.write_table(rewritten, buffer)
    files[0].write_bytes(buffer.getvalue())
    manifest_before = int(str(_bronze(warehouse, "select count(*) from bronze._cdcflow_load_manifest")[0][0]))
    assert _load_once(writer, warehouse) == 0
    manifest_after = int(str(_bronze(warehouse, "select count(*) from bronze._cdcflow_load_manifest")[0][0]))
    assert manifest_after == manifest_before + 1  # the new version was loaded (and its rows deduplicated)
    counts = _bronze(
        warehouse,
        "select count(*), count(distinct (_kafka_partition, _kafka_offset)) from bronze.lending__transactions",
    )
    assert counts[0][0] == counts[0][1] == first[0][0]


def test_kill_9_between_staging_and_commit(
    settings: Settings, lake_with_changes: WriterProcess, tmp_path: Path
) -> None:
    writer, warehouse = lake_with_changes, tmp_path / "wh.duckdb"
    env = {**_loader_env(writer, warehouse), "CDCFLOW_LOADER__CRASH_BEFORE_COMMIT": "true"}
    crashed = subprocess.run([sys.executable, "-m", "services.loader", "--once"], env=env, check=False, timeout=120)
    assert crashed.returncode == -signal.SIGKILL
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        staging = conn.execute(
            "select count(*) from information_schema.tables where table_schema = 'staging'"
        ).fetchone()
        manifest = conn.execute("select count(*) from bronze._cdcflow_load_manifest").fetchone()
    assert staging == (1,)  # left behind by the crash
    assert manifest == (0,)  # nothing was committed
    assert _load_once(writer, warehouse) == 0
    _assert_bronze_equals_lake(writer, warehouse, settings.kafka.topic_prefix)
    assert _bronze(warehouse, "select count(*) from information_schema.tables where table_schema = 'staging'") == [(0,)]


def test_a_corrupt_file_is_set_aside_and_the_rest_loads(
    settings: Settings, lake_with_changes: WriterProcess, tmp_path: Path
) -> None:
    writer, warehouse, prefix = lake_with_changes, tmp_path / "wh.duckdb", settings.kafka.topic_prefix
    folder = next((writer.lake_root / prefix / "lending.customers").rglob("*.parquet")).parent
    (folder / "p0-99999999999999999999.parquet").write_bytes(b"PAR1 this is not parquet")
    assert _load_once(writer, warehouse) == 0
    _assert_bronze_equals_lake(writer, warehouse, prefix)
    failed = list((writer.lake_root / "_failed").rglob("p0-99999999999999999999.parquet*"))
    assert sorted(p.name for p in failed) == [
        "p0-99999999999999999999.parquet",
        "p0-99999999999999999999.parquet.reason.txt",
    ]
    assert "not readable as Parquet" in next(p for p in failed if p.suffix == ".txt").read_text()


def test_added_column_reaches_bronze(
    settings: Settings, pg: Conn, writer: WriterProcess, new_table: str, tmp_path: Path
) -> None:
    prefix, warehouse = settings.kafka.topic_prefix, tmp_path / "wh.duckdb"
    pg.execute(f"insert into lending.{new_table} values (1, 1.50)".encode())
    proc = writer.start()
    wait_until("v1 rows", lambda: read_lake_table(writer.lake_root, prefix, f"lending.{new_table}").num_rows == 1)
    assert _load_once(writer, warehouse) == 0
    pg.execute(f"alter table lending.{new_table} add column note text".encode())
    pg.execute(f"insert into lending.{new_table} values (2, 2.50, 'two')".encode())
    wait_until("v2 rows", lambda: read_lake_table(writer.lake_root, prefix, f"lending.{new_table}").num_rows == 2)
    writer.terminate(proc)
    assert _load_once(writer, warehouse) == 0
    rows = _bronze(warehouse, f"select id, amount, note from bronze.lending__{new_table} order by id")
    assert [(r[0], str(r[1]), r[2]) for r in rows] == [(1, "1.50", None), (2, "2.50", "two")]
