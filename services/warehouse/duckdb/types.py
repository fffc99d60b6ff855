"""Arrow types as DuckDB columns.

Unconstrained NUMERIC (76 digits) is wider than DuckDB's DECIMAL (38): it is stored as exact text, in a list too.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

from services.warehouse.bronze import widens
from services.warehouse.errors import WarehouseError

__all__ = ["duckdb_type", "duckdb_widens", "for_duckdb"]

_NUMERIC: dict[str, pa.DataType] = {
    "SMALLINT": pa.int16(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "FLOAT": pa.float32(),
    "REAL": pa.float32(),
    "DOUBLE": pa.float64(),
}


def duckdb_type(data_type: pa.DataType) -> str:
    """The DuckDB type, spelled as ``information_schema.columns`` reports it (so changes can be detected)."""
    if pa.types.is_decimal(data_type):
        if data_type.precision > 38:
            return "VARCHAR"
        return f"DECIMAL({data_type.precision},{data_type.scale})"
    if pa.types.is_list(data_type):
        return f"{duckdb_type(data_type.value_type)}[]"
    if pa.types.is_timestamp(data_type):
        return "TIMESTAMP WITH TIME ZONE" if data_type.tz else "TIMESTAMP"
    simple = {
        pa.int16(): "SMALLINT",
        pa.int32(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.bool_(): "BOOLEAN",
        pa.float32(): "FLOAT",  # single precision; information_schema spells REAL so
        pa.float64(): "DOUBLE",
        pa.string(): "VARCHAR",
        pa.date32(): "DATE",
        pa.time64("us"): "TIME",
        pa.binary(): "BLOB",
    }
    if data_type in simple:
        return simple[data_type]
    raise WarehouseError(f"no DuckDB type for {data_type}")


def duckdb_widens(old: str, new: str) -> bool:
    """Whether a bronze column of DuckDB type ``old`` can become ``new`` in place (:func:`bronze.widens`)."""
    before, after = _numeric(old), _numeric(new)
    return before is not None and after is not None and widens(before, after)


def _numeric(spelled: str) -> pa.DataType | None:
    """The lake type of a numeric DuckDB type (or a list of one), as ``information_schema`` spells it."""
    if spelled.endswith("[]"):
        element = _numeric(spelled[:-2])
        return None if element is None else pa.list_(element)
    if found := re.fullmatch(r"DECIMAL\((\d+),(\d+)\)", spelled):
        return pa.decimal128(int(found[1]), int(found[2]))
    return _NUMERIC.get(spelled)


def for_duckdb(table: pa.Table) -> pa.Table:
    """Decimals wider than DuckDB's 38 digits, alone or in a list, become their exact text."""
    columns, fields = [], []
    for field, column in zip(table.schema, table.columns, strict=True):
        wanted = _held_type(field.type)
        columns.append(column if wanted == field.type else pc.cast(column, wanted))
        fields.append(field.with_type(wanted))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _held_type(data_type: pa.DataType) -> pa.DataType:
    """The Arrow type DuckDB is given for a lake column of ``data_type`` (:func:`duckdb_type` names it)."""
    if pa.types.is_decimal(data_type) and data_type.precision > 38:
        return pa.string()
    if pa.types.is_list(data_type):
        return pa.list_(data_type.value_field.with_type(_held_type(data_type.value_type)))
    return data_type
