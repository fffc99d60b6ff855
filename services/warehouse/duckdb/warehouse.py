"""Bronze in a DuckDB file: the embedded default.

DuckDB has no partitions; the dedup is bounded by a primary key on the Kafka coordinates instead (an ART
index: each staged row costs one index probe, whatever bronze's size), with ``INSERT OR IGNORE``.
The file is opened per call and closed after, so dbt and ``cdcflow verify`` can open it in between; inside a
``session()`` (the loader's, for a cycle's tables, renewed every second) it is opened once for all the calls.
Catalog changes (the schemas, a bronze table and its columns) are made under a lock of the instance: the
transform beside the loader shares it, and two connections of one process that create the same entry at once
fail (a write-write conflict, or "already exists" after a check that both passed).

A new file is made in DuckDB 1.4's storage format (:data:`STORAGE_VERSION`); DuckDB's default is 0.10.2's,
whose open and checkpoint cost grows with the tables in the file — one of each per table a cycle loads.
A file made before keeps the format it was made in.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from services.common.contracts import TableContract
from services.common.lake import Lake
from services.common.sql import quote_name, quote_string
from services.warehouse.base import LoadedFile, LoadResult
from services.warehouse.bronze import (
    COORDINATES,
    LOADER_COLUMNS,
    MANIFEST_COLUMNS,
    MANIFEST_KEY,
    MANIFEST_TABLE,
    BronzeChange,
    LoadBatch,
    bronze_schema,
    bronze_table,
    evolve,
    refuse_names_alike,
)
from services.warehouse.duckdb.types import duckdb_type, duckdb_widens, for_duckdb
from services.warehouse.errors import WarehouseBusyError, WarehouseError
from services.warehouse.lakefile import read_lake_file, with_lake_file

__all__ = ["STORAGE_VERSION", "DuckDBWarehouse"]

# 1.4 is a long-term support release: its files open in every DuckDB since, not in those before
STORAGE_VERSION = "v1.4.0"

MANIFEST = f"bronze.{MANIFEST_TABLE}"
_STAGING = "staging"
_MANIFEST_DDL = (
    f"create table if not exists {MANIFEST} ("
    + ", ".join(f"{f.name} {duckdb_type(f.type)} not null" for f in MANIFEST_COLUMNS)
    + f", primary key ({', '.join(MANIFEST_KEY)}))"
)


def _create_database(path: Path) -> None:
    """Make an empty DuckDB file at ``path`` in :data:`STORAGE_VERSION`'s format, unless one is there."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with duckdb.connect() as conn:
            conn.execute(f"attach {quote_string(str(path))} as created (storage_version '{STORAGE_VERSION}')")
    except duckdb.IOException:  # another process made it meanwhile and holds it: it is there
        if not path.exists():
            raise


class DuckDBWarehouse:
    def __init__(self, path: Path, *, on_progress: Callable[[], None] | None = None) -> None:
        self._path = path
        self._on_progress = on_progress or (lambda: None)
        self._catalog = threading.Lock()
        _create_database(path)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        # a connection open meanwhile keeps the database instance: the calls' own connections reuse it
        conn = self._open()
        try:
            yield
        finally:
            conn.close()

    def _open(self) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self._path))
        except duckdb.IOException as exc:  # another process holds the file's write lock
            raise WarehouseBusyError(f"{self._path} is in use: {exc}", whole_warehouse=True) from None

    @contextlib.contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        conn = self._open()
        try:
            with self._catalog:
                conn.execute(f"create schema if not exists bronze; create schema if not exists {_STAGING}")
                conn.execute(_MANIFEST_DDL)
            yield conn
        except duckdb.TransactionException as exc:
            # another connection of this process (the transform beside the loader) changed the same catalog
            # entry at once, e.g. both created a schema or a bronze table: the next attempt sees it done
            raise WarehouseBusyError(f"{self._path}: {exc}") from None
        finally:
            conn.close()

    def ensure_bronze(self, contract: TableContract) -> BronzeChange:
        refuse_names_alike(contract)
        name = bronze_table(contract)
        wanted = {f.name: duckdb_type(f.type) for f in bronze_schema(contract)}
        with self._connect() as conn, self._catalog:
            existing = dict(
                conn.execute(
                    "select column_name, data_type from information_schema.columns"
                    " where table_schema = 'bronze' and table_name = ? order by ordinal_position",
                    [name],
                ).fetchall()
            )
            try:
                return self._shape_bronze(conn, name, existing, wanted)
            except duckdb.CatalogException as exc:  # e.g. a name bronze holds in another case
                raise WarehouseError(f"bronze.{name} cannot take contract version {contract.version}: {exc}") from None

    @staticmethod
    def _shape_bronze(
        conn: duckdb.DuckDBPyConnection, name: str, existing: dict[str, str], wanted: dict[str, str]
    ) -> BronzeChange:
        table = f"bronze.{quote_name(name)}"
        if not existing:
            columns = ", ".join(f"{quote_name(c)} {t}" for c, t in wanted.items())
            conn.execute(f"create table {table} ({columns}, primary key ({', '.join(COORDINATES)}))")
            return BronzeChange(added=list(wanted), widened=[])
        change = evolve(name, existing, list(wanted.items()), changed=str.__ne__, describe=str, widens=duckdb_widens)
        for column in change.added:
            conn.execute(f"alter table {table} add column {quote_name(column)} {wanted[column]}")
        for column in change.widened:
            conn.execute(f"alter table {table} alter column {quote_name(column)} set data type {wanted[column]}")
        return change

    def loaded_files(self, contract: TableContract, paths: Collection[str] | None = None) -> set[LoadedFile]:
        if paths is not None and not paths:
            return set()
        query = f"select lake_file, lake_version from {MANIFEST} where bronze_table = ?"
        with self._connect() as conn:
            if paths is None:
                rows = conn.execute(query, [bronze_table(contract)]).fetchall()
            else:  # a join in DuckDB: only the listed files' rows come back to Python
                listed = pa.table({"lake_file": pa.array(sorted(set(paths)), pa.string())})  # noqa: F841 - by name
                rows = conn.execute(
                    f"{query} and lake_file in (select lake_file from listed)", [bronze_table(contract)]
                ).fetchall()
        return {LoadedFile(str(p), str(v)) for p, v in rows}

    def load(self, batch: LoadBatch, lake: Lake, *, before_commit: Callable[[], None] | None = None) -> LoadResult:
        contract = batch.contract
        name, load_id = bronze_table(contract), batch.load_id
        staging = f"{_STAGING}.{quote_name(batch.staging)}"
        columns = [f.name for f in bronze_schema(contract) if f.name not in {c.name for c in LOADER_COLUMNS}]
        column_list = ", ".join(quote_name(c) for c in [*columns, "_lake_file"])
        with self._connect() as conn:
            try:
                rows = self._stage(conn, staging, batch, lake)
                try:
                    conn.execute("begin transaction")
                    inserted = conn.execute(
                        f"insert or ignore into bronze.{quote_name(name)} ({column_list}, _load_id, _loaded_at)"
                        f" select {column_list}, ?, now() from {staging}",
                        [load_id],
                    ).fetchone()
                    conn.executemany(
                        f"insert or replace into {MANIFEST} values (?, ?, ?, ?, ?, now())",
                        [[load_id, name, f.path, f.version, rows[f.path]] for f in batch.files],
                    )
                    if before_commit is not None:
                        before_commit()
                    conn.execute("commit")
                except duckdb.Error as exc:
                    conn.execute("rollback")
                    raise WarehouseError(
                        f"loading {len(batch.files)} file(s) into bronze.{name} failed: {exc}"
                    ) from exc
            finally:
                conn.execute(f"drop table if exists {staging}")
        return LoadResult(load_id, len(batch.files), sum(rows.values()), int(inserted[0]) if inserted else 0)

    def _stage(self, conn: duckdb.DuckDBPyConnection, staging: str, batch: LoadBatch, lake: Lake) -> dict[str, int]:
        """The batch's files into the staging table one at a time, so memory holds one file's rows, not the
        whole batch's (a backlog of full files decodes to gigabytes); each file's rows by its path."""
        rows: dict[str, int] = {}
        for index, file in enumerate(batch.files):
            table = with_lake_file(read_lake_file(lake.read(file.path), file.path, batch.contract), file.path)
            staged = for_duckdb(table)  # noqa: F841 - DuckDB reads the Arrow table by its variable name
            into = f"create or replace table {staging} as" if index == 0 else f"insert into {staging}"
            try:
                conn.execute(f"{into} select * from staged")
            except duckdb.Error as exc:
                raise WarehouseError(
                    f"staging {file.path} for bronze.{bronze_table(batch.contract)} failed: {exc}"
                ) from exc
            rows[file.path] = table.num_rows
            self._on_progress()  # a batch of many files takes a while: each one staged is progress
        return rows

    def max_source_ts(self, contract: TableContract) -> datetime | None:
        with self._connect() as conn:
            found = conn.execute(
                "select 1 from information_schema.tables where table_schema = 'bronze' and table_name = ?",
                [bronze_table(contract)],
            ).fetchone()
            if not found:
                return None
            row = conn.execute(f"select max(_source_ts) from bronze.{quote_name(bronze_table(contract))}").fetchone()
        value: Any = row[0] if row else None
        return value if isinstance(value, datetime) else None

    def drop_stale_staging(self) -> Sequence[str]:
        with self._connect() as conn, self._catalog:
            names = [
                str(r[0])
                for r in conn.execute(
                    "select table_name from information_schema.tables where table_schema = ?", [_STAGING]
                ).fetchall()
            ]
            for name in names:
                conn.execute(f"drop table if exists {_STAGING}.{quote_name(name)}")
        return names

    def close(self) -> None:
        """Nothing stays open between calls."""
