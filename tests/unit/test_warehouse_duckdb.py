"""Bronze on DuckDB (services/warehouse/duckdb/): the column types as DuckDB reports them, and catalog changes
from two threads of one process (the transform beside the loader)."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from services.common.contracts import Column
from services.common.contracts.arrow import arrow_type
from services.warehouse.duckdb import DuckDBWarehouse, duckdb_type
from services.warehouse.duckdb.warehouse import STORAGE_VERSION
from tests.fixtures.lakefiles import lending_contract


@pytest.mark.parametrize(
    "semantic",
    ["int16", "int32", "int64", "boolean", "float32", "float64", "string", "uuid", "json", "date", "timestamp",
     "timestamp_millis", "timestamptz", "time", "bytes"],
)  # fmt: skip
def test_every_bronze_type_is_spelled_as_duckdb_reports_it(semantic: str) -> None:
    """Bronze evolution compares these spellings with information_schema: any mismatch reads as a type change."""
    column = Column("c", semantic, "x")  # type: ignore[arg-type]
    for data_type in (arrow_type(column), pa.list_(arrow_type(column))):
        spelled = duckdb_type(data_type)
        with duckdb.connect() as conn:
            conn.execute(f"create table t (c {spelled})")
            (reported,) = conn.execute(
                "select data_type from information_schema.columns where table_name = 't'"
            ).fetchone()  # type: ignore[misc]
        assert reported == spelled


def test_two_threads_creating_the_same_bronze_tables_at_once_both_succeed(tmp_path: Path) -> None:
    """The loader and the transform beside it share one instance and may both create a bronze table first;
    without the instance's catalog lock one of them fails with a write-write conflict or "already exists"."""
    contracts = [lending_contract(t) for t in ("customers", "facilities", "transactions")]
    failures: list[BaseException] = []
    for round_ in range(15):
        path = tmp_path / f"w{round_}.duckdb"
        warehouse = DuckDBWarehouse(path)
        start = threading.Barrier(2)

        def create(warehouse: DuckDBWarehouse = warehouse, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                for contract in contracts:
                    warehouse.ensure_bronze(contract)
                warehouse.drop_stale_staging()
            except Exception as exc:
                failures.append(exc)

        with duckdb.connect(str(path)):  # held open, as beside the loader: both threads share the instance
            threads = [threading.Thread(target=create) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    assert failures == []


def _storage_version(path: Path) -> str:
    with duckdb.connect(str(path), read_only=True) as conn:
        (tags,) = conn.execute("select tags from duckdb_databases() where not internal").fetchone()  # type: ignore[misc]
    return str(tags["storage_version"])


def test_a_new_file_is_made_in_the_storage_format_of_many_tables(tmp_path: Path) -> None:
    """DuckDB's default format opens and checkpoints slower the more tables the file holds; a load of one table
    among fifty paid for the other forty-nine twice (BENCHMARKS.md, "Many tables, little change")."""
    path = tmp_path / "nested" / "wh.duckdb"
    warehouse = DuckDBWarehouse(path)
    warehouse.ensure_bronze(lending_contract("customers"))
    warehouse.close()
    assert _storage_version(path) == f"{STORAGE_VERSION}+"


def test_a_file_made_before_keeps_its_format_and_its_tables(tmp_path: Path) -> None:
    path = tmp_path / "wh.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("create table kept as select 1 as n")
    made_in = _storage_version(path)
    assert made_in != f"{STORAGE_VERSION}+"
    warehouse = DuckDBWarehouse(path)
    warehouse.ensure_bronze(lending_contract("customers"))
    warehouse.close()
    assert _storage_version(path) == made_in
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.execute("select n from kept").fetchall() == [(1,)]
        tables = conn.execute("select table_name from information_schema.tables where table_schema = 'bronze'")
        assert "lending__customers" in {name for (name,) in tables.fetchall()}
