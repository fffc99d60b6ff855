"""Arrow schemas derived from contracts: the lake's Parquet types."""

from __future__ import annotations

import pyarrow as pa

from services.common.contracts.model import (
    VARIABLE_DECIMAL_PRECISION,
    VARIABLE_DECIMAL_SCALE,
    Column,
    TableContract,
)

__all__ = ["LAKE_METADATA", "arrow_schema", "arrow_type", "lake_schema"]

_UTC_MICROS = pa.timestamp("us", tz="UTC")

LAKE_METADATA: tuple[pa.Field, ...] = (
    pa.field("_op", pa.string(), nullable=False),
    pa.field("_source_ts", _UTC_MICROS),
    pa.field("_source_lsn", pa.int64()),
    pa.field("_source_txid", pa.int64()),
    pa.field("_is_snapshot", pa.bool_(), nullable=False),
    pa.field("_unavailable_columns", pa.list_(pa.string()), nullable=False),
    pa.field("_kafka_topic", pa.string(), nullable=False),
    pa.field("_kafka_partition", pa.int32(), nullable=False),
    pa.field("_kafka_offset", pa.int64(), nullable=False),
    pa.field("_kafka_timestamp", _UTC_MICROS),
    pa.field("_ingested_at", _UTC_MICROS, nullable=False),
)
"""Columns the lake writer adds to every row, after the table's own columns."""


def _decimal(precision: int, scale: int) -> pa.DataType:
    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)


_SIMPLE: dict[str, pa.DataType] = {
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "boolean": pa.bool_(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "variable_decimal": _decimal(VARIABLE_DECIMAL_PRECISION, VARIABLE_DECIMAL_SCALE),
    "string": pa.string(),
    "uuid": pa.string(),
    "json": pa.string(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),  # wall time without a zone: kept as it was written
    "timestamp_millis": pa.timestamp("us"),
    "timestamptz": _UTC_MICROS,
    "time": pa.time64("us"),
    "bytes": pa.binary(),
}


def arrow_type(column: Column) -> pa.DataType:
    if column.semantic == "decimal":
        assert column.precision is not None
        assert column.scale is not None
        return _decimal(column.precision, column.scale)
    if column.semantic == "array":
        assert column.items is not None
        return pa.list_(arrow_type(column.items))
    return _SIMPLE[column.semantic]


def arrow_schema(contract: TableContract) -> pa.Schema:
    """The table's own columns. Every column is nullable in the lake: deletes and truncates carry no image."""
    return pa.schema([pa.field(c.name, arrow_type(c)) for c in contract.columns])


def lake_schema(contract: TableContract) -> pa.Schema:
    """The Parquet schema of every lake file of the table: its columns, then :data:`LAKE_METADATA`."""
    fields = [*arrow_schema(contract), *LAKE_METADATA]
    return pa.schema(
        fields,
        metadata={
            b"cdcflow.table": contract.qualified_name.encode(),
            b"cdcflow.contract_version": str(contract.version).encode(),
        },
    )
