"""Arrow types as BigQuery columns, and how a bronze column's type is compared with the contract's."""

from __future__ import annotations

import pyarrow as pa
from google.cloud import bigquery

from services.common.contracts import TableContract, lake_schema
from services.common.contracts.reserved import BIGQUERY_LIMITS, LAKE_FOLDER_NAMES
from services.warehouse.bronze import bronze_schema, widens
from services.warehouse.errors import BronzeSchemaError, WarehouseError

__all__ = [
    "HIVE_KEYS",
    "bigquery_field",
    "bigquery_schema",
    "bigquery_widens",
    "describe_type",
    "refuse_unloadable_columns",
    "staging_schema",
    "type_changed",
]

HIVE_KEYS: tuple[tuple[str, str], ...] = tuple(zip(LAKE_FOLDER_NAMES, ("DATE", "INT64"), strict=True))
"""The lake's folder levels, read by the load jobs as hive partition keys (the staging table's last columns)."""

_NUMERIC_MAX_SCALE, _NUMERIC_MAX_INTEGER_DIGITS = 9, 29

_SIMPLE_TYPES: dict[pa.DataType, str] = {
    pa.int16(): "INT64",
    pa.int32(): "INT64",
    pa.int64(): "INT64",
    pa.bool_(): "BOOL",
    pa.float32(): "FLOAT64",
    pa.float64(): "FLOAT64",
    pa.string(): "STRING",
    pa.binary(): "BYTES",
    pa.date32(): "DATE",
    pa.time64("us"): "TIME",
}
_LEGACY_TYPES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT"}


def bigquery_field(field: pa.Field) -> bigquery.SchemaField:
    """The BigQuery column for an Arrow field of the lake; always NULLABLE (or REPEATED for lists).

    Decimals stay exact: NUMERIC(P, S) while it fits (scale ≤ 9, ≤ 29 integer digits), else BIGNUMERIC(P, S);
    the unconstrained NUMERIC of the contracts (76 digits, scale 38) is plain BIGNUMERIC.
    """
    data_type = field.type
    if pa.types.is_list(data_type):
        item = bigquery_field(pa.field(field.name, data_type.value_type))
        if item.mode == "REPEATED":
            raise WarehouseError(f"column {field.name}: BigQuery has no array of arrays ({data_type})")
        return bigquery.SchemaField(
            field.name, item.field_type, mode="REPEATED", precision=item.precision, scale=item.scale
        )
    if pa.types.is_decimal(data_type):
        precision, scale = data_type.precision, data_type.scale
        if why := BIGQUERY_LIMITS.why_unfit_decimal(precision, scale):
            raise WarehouseError(f"column {field.name}: {data_type} {why}")
        if scale <= _NUMERIC_MAX_SCALE and precision - scale <= _NUMERIC_MAX_INTEGER_DIGITS:
            return bigquery.SchemaField(field.name, "NUMERIC", precision=precision, scale=scale)
        if (precision - scale, scale) == BIGQUERY_LIMITS.widest_decimal:
            return bigquery.SchemaField(field.name, "BIGNUMERIC")
        return bigquery.SchemaField(field.name, "BIGNUMERIC", precision=precision, scale=scale)
    if pa.types.is_timestamp(data_type):
        return bigquery.SchemaField(field.name, "TIMESTAMP" if data_type.tz else "DATETIME")
    if data_type in _SIMPLE_TYPES:
        return bigquery.SchemaField(field.name, _SIMPLE_TYPES[data_type])
    raise WarehouseError(f"column {field.name}: no BigQuery type for {data_type}")


def bigquery_schema(contract: TableContract) -> list[bigquery.SchemaField]:
    """Bronze's columns: the lake's (row image, then the writer's metadata) and the loader's own."""
    return [bigquery_field(f) for f in bronze_schema(contract)]


def staging_schema(contract: TableContract) -> list[bigquery.SchemaField]:
    """The staging table: the lake file's columns in the file's order, then the folder's hive keys."""
    fields = [bigquery_field(f.with_nullable(True)) for f in lake_schema(contract)]
    return [*fields, *(bigquery.SchemaField(name, kind) for name, kind in HIVE_KEYS)]


def refuse_unloadable_columns(contract: TableContract) -> None:
    """A column named as BigQuery refuses (:data:`~services.common.contracts.reserved.BIGQUERY_LIMITS`: like a hive
    key of the staging table, a reserved prefix, a ``$``) would fail every load of the table."""
    for column in contract.columns:
        if why := BIGQUERY_LIMITS.why_refused(column.name):
            raise BronzeSchemaError(
                f"{contract.qualified_name}.{column.name}: {why}. The lake writer refuses such a column when its "
                "warehouse is BigQuery; a contract written before that holds it: rename the column in PostgreSQL, "
                "or exclude it from capture (CDCFLOW_WRITER__EXCLUDE_COLUMNS and the connector's column.exclude.list)"
            )


def _normalized(field: bigquery.SchemaField) -> tuple[str, str]:
    field_type = _LEGACY_TYPES.get(field.field_type.upper(), field.field_type.upper())
    return field_type, "REPEATED" if field.mode == "REPEATED" else "NULLABLE"


def describe_type(field: bigquery.SchemaField) -> str:
    """The column's type in GoogleSQL DDL: ``NUMERIC(20, 2)``, ``ARRAY<STRING>``."""
    field_type, mode = _normalized(field)
    params = f"({field.precision}, {field.scale})" if field.precision is not None else ""
    return f"ARRAY<{field_type}{params}>" if mode == "REPEATED" else f"{field_type}{params}"


def type_changed(existing: bigquery.SchemaField, wanted: bigquery.SchemaField) -> bool:
    if _normalized(existing) != _normalized(wanted):
        return True
    # BigQuery reports the parameters it enforces; a table without them (created by hand) is not refused.
    return existing.precision is not None and (existing.precision, existing.scale) != (wanted.precision, wanted.scale)


def bigquery_widens(existing: bigquery.SchemaField, wanted: bigquery.SchemaField) -> bool:
    """Whether a bronze column can change from ``existing`` to ``wanted`` in place (:func:`bronze.widens`);
    every such change is one BigQuery's ``ALTER COLUMN … SET DATA TYPE`` accepts (INT64 to NUMERIC, a NUMERIC
    to a wider NUMERIC or BIGNUMERIC)."""
    before, after = _lake_type(existing), _lake_type(wanted)
    return before is not None and after is not None and widens(before, after)


def _lake_type(field: bigquery.SchemaField) -> pa.DataType | None:
    """The widest lake type a numeric BigQuery column holds (NUMERIC without parameters: 38 digits, scale 9)."""
    field_type, mode = _normalized(field)
    if mode == "REPEATED":
        return None  # BigQuery changes no array's element type in place
    if field_type == "INT64":
        return pa.int64()
    if field_type == "FLOAT64":
        return pa.float64()
    if field_type == "NUMERIC":
        return pa.decimal128(field.precision or 38, field.scale if field.precision is not None else 9)
    if field_type == "BIGNUMERIC":
        return pa.decimal256(field.precision or 76, field.scale if field.precision is not None else 38)
    return None
