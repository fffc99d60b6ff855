"""Contracts generated from the live PostgreSQL catalog (``cdcflow schemas generate``).

A partitioned table is one contract, its parent's: the connector publishes its partitions' changes
through the root, so a partition is never a table of its own downstream.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from services.common.contracts.errors import NoPrimaryKeyError
from services.common.contracts.model import Column, Semantic, TableContract

__all__ = ["column_from_catalog", "contracts_from_catalog"]

_SEMANTIC_BY_TYPE: dict[str, Semantic] = {
    "int2": "int16",
    "int4": "int32",
    "int8": "int64",
    "oid": "int64",
    "bool": "boolean",
    "float4": "float32",
    "float8": "float64",
    "uuid": "uuid",
    "json": "json",
    "jsonb": "json",
    "hstore": "json",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "time": "time",
    "bytea": "bytes",
}
# Everything else (text, varchar, char, enums, interval, timetz, inet, xml, …) arrives as text.

_COLUMNS_SQL = """
select a.attname,
       a.attnotnull,
       format_type(a.atttypid, a.atttypmod) as formatted,
       coalesce(base.typname, t.typname) as base_type,
       case when t.typtype = 'd' then t.typtypmod else a.atttypmod end as typmod,
       coalesce(base.typelem, t.typelem) as elem_oid,
       coalesce(base.typcategory, t.typcategory) as category,
       (select et.typname from pg_type et where et.oid = coalesce(base.typelem, t.typelem)) as elem_type,
       coalesce(pk.is_key, false) as is_key,
       a.attgenerated <> '' as is_generated
  from pg_attribute a
  join pg_class c on c.oid = a.attrelid
  join pg_namespace n on n.oid = c.relnamespace
  join pg_type t on t.oid = a.atttypid
  left join pg_type base on t.typtype = 'd' and base.oid = t.typbasetype
  left join lateral (
        select true as is_key from pg_index i
         where i.indrelid = c.oid and i.indisprimary and a.attnum = any(i.indkey)) pk on true
 where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped
 order by a.attnum
"""

_KEY_ORDER_SQL = """
select a.attname
  from pg_index i
  join pg_class c on c.oid = i.indrelid
  join pg_namespace n on n.oid = c.relnamespace
  join lateral unnest(i.indkey) with ordinality as k(attnum, position) on true
  join pg_attribute a on a.attrelid = c.oid and a.attnum = k.attnum
 where n.nspname = %s and c.relname = %s and i.indisprimary
 order by k.position
"""

_IDENTITY = {"d": "default", "f": "full", "i": "index", "n": "nothing"}
_IDENTITY_SQL = """
select c.relreplident from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname = %s and c.relname = %s
"""

_TABLES_SQL = """
select n.nspname, c.relname
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where c.relkind in ('r', 'p') and not c.relispartition
   and n.nspname not in ('pg_catalog', 'information_schema')
 order by 1, 2
"""


def _numeric(typmod: int) -> tuple[int, int] | None:
    """NUMERIC(p, s) is encoded in the type modifier; -1 means unconstrained."""
    if typmod < 4:
        return None
    return ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF


def column_from_catalog(name: str, base_type: str, typmod: int, pg_type: str, nullable: bool) -> Column:
    if base_type == "numeric":
        shape = _numeric(typmod)
        if shape is None:
            return Column(name, "variable_decimal", pg_type, nullable)
        return Column(name, "decimal", pg_type, nullable, precision=shape[0], scale=shape[1])
    if base_type == "timestamp" and 0 <= typmod <= 3:  # adaptive precision: milliseconds on the wire
        return Column(name, "timestamp_millis", pg_type, nullable)
    if base_type == "money":  # Debezium sends money as a decimal with money.fraction.digits (2)
        return Column(name, "decimal", pg_type, nullable, precision=19, scale=2)
    return Column(name, _SEMANTIC_BY_TYPE.get(base_type, "string"), pg_type, nullable)


def _column(row: dict[str, Any]) -> Column:
    name, pg_type = str(row["attname"]), str(row["formatted"])
    nullable = not row["attnotnull"]
    if row["category"] == "A" and row["elem_type"]:
        element_type = str(row["elem_type"])
        # the array's own typmod applies to its elements (numeric(10,2)[])
        items = column_from_catalog("element", element_type, int(row["typmod"]), element_type, True)
        return Column(name, "array", pg_type, nullable, items=items)
    return column_from_catalog(name, str(row["base_type"]), int(row["typmod"]), pg_type, nullable)


def _contract(conn: psycopg.Connection[Any], schema: str, table: str) -> TableContract:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        rows = cursor.execute(_COLUMNS_SQL, (schema, table)).fetchall()
    key = tuple(str(r[0]) for r in conn.execute(_KEY_ORDER_SQL, (schema, table)).fetchall())
    if not key:
        raise NoPrimaryKeyError(
            f"{schema}.{table} has no primary key: cdcflow orders a row's versions by its key; "
            "add one (ALTER TABLE … ADD PRIMARY KEY) or leave the table out of the connector"
        )
    doc = f"Row image of {schema}.{table} as captured from PostgreSQL."
    identity_row = conn.execute(_IDENTITY_SQL, (schema, table)).fetchone()
    identity = _IDENTITY.get(str(identity_row[0]) if identity_row else "d", "default")
    return TableContract(
        schema,
        table,
        tuple(_column(r) for r in rows if not r["is_generated"]),
        key,
        doc=doc,
        replica_identity=identity,  # type: ignore[arg-type]
        generated_columns=tuple(str(r["attname"]) for r in rows if r["is_generated"]),
    )


def contracts_from_catalog(dsn: str, include: list[str], exclude: list[str] | None = None) -> list[TableContract]:
    """Contracts of the tables whose ``schema.table`` fully matches one ``include`` regex and no ``exclude``."""
    included = [re.compile(p) for p in include]
    excluded = [re.compile(p) for p in exclude or []]
    with psycopg.connect(dsn) as conn:
        tables = [(str(s), str(t)) for s, t in conn.execute(_TABLES_SQL).fetchall()]
        wanted = [
            (s, t)
            for s, t in tables
            if any(p.fullmatch(f"{s}.{t}") for p in included) and not any(p.fullmatch(f"{s}.{t}") for p in excluded)
        ]
        return [_contract(conn, s, t) for s, t in wanted]
