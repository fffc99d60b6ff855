"""Bronze on DuckDB (services/warehouse/duckdb/): the column types as DuckDB reports them."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from services.common.contracts import Column
from services.common.contracts.arrow import arrow_type
from services.warehouse.duckdb import duckdb_type


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
