"""Contracts generated from the live PostgreSQL catalog (``cdcflow schemas generate``).

A partitioned table is one contract, its parent's: the connector publishes its partitions' changes
through the root, so a partition is never a table of its own downstream.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

from services.common.contracts.errors import (
    CatalogQueryError,
    CatalogUnreachableError,
    NoPrimaryKeyError,
    UnsupportedColumnError,
)
from services.common.contracts.model import (
    NAME_RULE,
    VARIABLE_DECIMAL_PRECISION,
    VARIABLE_DECIMAL_SCALE,
    Column,
    Semantic,
    TableContract,
    is_safe_name,
)
from services.common.contracts.reserved import WarehouseLimits, names_alike, why_reserved

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "GENERATED",
    "HAZARD_KINDS",
    "UNSUPPORTED_TYPES",
    "HazardKind",
    "PublishingHazard",
    "bounded_dsn",
    "column_from_catalog",
    "columns_with_defaults",
    "contracts_from_catalog",
    "inheritance_parents",
    "publishing_hazards",
    "refused_columns",
    "table_contract",
    "table_key",
    "unloadable_types",
]

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
# Everything else (text, varchar, char, enums, interval, timetz, inet, xml, ranges, …) arrives as text.

# Types Debezium's PostgreSQL connector (3.4, pgoutput) does not carry as their value: captured, the column
# would silently hold NULL or another encoding. A table with one is refused until the column is excluded.
_NOT_SENT = (
    *("line", "lseg", "box", "path", "polygon", "circle", "pg_lsn", "jsonpath", "tsquery"),
    *("txid_snapshot", "pg_snapshot", "aclitem"),
    *("regclass", "regtype", "regproc", "regprocedure", "regoper", "regoperator", "regconfig", "regdictionary"),
    *("regnamespace", "regrole", "regcollation"),
)
UNSUPPORTED_TYPES: dict[str, str] = {
    "name": "arrives as NULL",
    "bit": "arrives as a bit set in bytes (bit(1) as a boolean), not as its bits",
    "varbit": "arrives as a bit set in bytes, whose length is lost",
    "point": "arrives as a geometry struct, not as text",
    **dict.fromkeys(("oidvector", "int2vector"), "arrives as an empty array"),
    **dict.fromkeys(_NOT_SENT, "is not sent at all"),
}
# Types of extensions the connector sends as cdcflow reads them; it sends no other extension's type.
_EXTENSION_TYPES = frozenset({"citext", "ltree", "hstore"})
# Element types whose arrays are not sent at all (the elements alone are fine).
_UNSUPPORTED_ARRAY_ELEMENTS = {
    **dict.fromkeys(("xml", "interval", "money"), "is not sent at all"),
    # the JDBC driver reads such an array's elements into java.sql.Time, which holds milliseconds
    "time": "arrives with its microseconds cut to milliseconds and 24:00:00 as 00:00:00",
    "timetz": "arrives with its fractions of a second cut off",
}
_DOMAIN_ELEMENTS = "is a domain: the connector sends such an array as NULL"
GENERATED = "stored generated column: PostgreSQL's logical decoding (before 18) does not send it"
_EXCLUDED = "excluded from capture (CDCFLOW_WRITER__EXCLUDE_COLUMNS and the connector's column.exclude.list)"

_COLUMNS_SQL = """
select a.attname,
       a.attnotnull,
       format_type(a.atttypid, a.atttypmod) as formatted,
       coalesce(base.typname, t.typname) as base_type,
       case when t.typtype = 'd' then t.typtypmod else a.atttypmod end as typmod,
       coalesce(base.typelem, t.typelem) as elem_oid,
       coalesce(base.typcategory, t.typcategory) as category,
       (select et.typname from pg_type et where et.oid = coalesce(base.typelem, t.typelem)) as elem_type,
       coalesce(base.typtype, t.typtype)::text as type_kind,
       (select tn.nspname from pg_namespace tn where tn.oid = coalesce(base.typnamespace, t.typnamespace))
         as type_schema,
       (select et.typtype::text from pg_type et where et.oid = coalesce(base.typelem, t.typelem)) as elem_kind,
       (select en.nspname from pg_type et join pg_namespace en on en.oid = et.typnamespace
         where et.oid = coalesce(base.typelem, t.typelem)) as elem_schema,
       coalesce(pk.is_key, false) as is_key,
       a.attgenerated <> '' as is_generated,
       a.attndims as dimensions
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

# Debezium keys a table's change events by its primary key, else by its first unique index in the order
# PostgreSQL's JDBC driver lists them (clustered first, then by name): the contract must use the same key.
_UNIQUE_INDEXES_SQL = """
select ic.relname as index,
       i.indisprimary as is_primary,
       i.indisreplident as is_identity,
       i.indisvalid as is_valid,
       i.indpred is not null as is_partial,
       0 = any(i.indkey::int2[]) as has_expression,
       array(select a.attname::text from unnest(i.indkey::int2[]) with ordinality as k(attnum, position)
               join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
              order by k.position) as columns,
       array(select a.attname::text from unnest(i.indkey::int2[]) as k(attnum)
               join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
              where not a.attnotnull) as nullable
  from pg_index i
  join pg_class c on c.oid = i.indrelid
  join pg_namespace n on n.oid = c.relnamespace
  join pg_class ic on ic.oid = i.indexrelid
 where n.nspname = %s and c.relname = %s and i.indisunique
 order by i.indisprimary desc, not i.indisclustered, ic.relname
"""

_IDENTITY = {"d": "default", "f": "full", "i": "index", "n": "nothing"}
_IDENTITY_SQL = """
select c.relreplident from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p') and not c.relispartition
"""

_TABLES_SQL = """
select n.nspname, c.relname
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where c.relkind in ('r', 'p') and not c.relispartition
   and n.nspname not in ('pg_catalog', 'information_schema')
 order by 1, 2
"""


def _numeric(typmod: int) -> tuple[int, int] | None:
    """NUMERIC(p, s) is encoded in the type modifier; -1 means unconstrained. The scale is 11 bits, signed:
    PostgreSQL 15 takes a scale below zero or above the precision (numeric(2, -3), numeric(3, 5))."""
    if typmod < 4:
        return None
    return ((typmod - 4) >> 16) & 0xFFFF, (((typmod - 4) & 0x7FF) ^ 0x400) - 0x400


def _unfit_numeric(type_name: str, typmod: int, warehouse: WarehouseLimits | None) -> str | None:
    """Why a NUMERIC(p, s) has no exact decimal in the lake (Parquet's: 0 <= s <= p <= 76) or in ``warehouse``,
    or None. Without a precision it has one in both (values beyond it go to the DLQ one by one)."""
    shape = _numeric(typmod) if type_name == "numeric" else None
    if shape is None:
        return None
    precision, scale = shape
    if precision > VARIABLE_DECIMAL_PRECISION:
        why = f"has more digits than the lake's widest exact decimal ({VARIABLE_DECIMAL_PRECISION})"
    elif scale < 0:
        why = "has a scale below zero, which no Parquet decimal takes"
    elif scale > precision:
        why = "has a scale above its precision, which no Parquet decimal takes"
    elif warehouse and (unfit := warehouse.why_unfit_decimal(precision, scale)):
        why = unfit
    else:
        return None
    return f"{why} (numeric without precision takes {VARIABLE_DECIMAL_SCALE} digits each side of the point)"


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


def _unsupported(row: dict[str, Any], warehouse: WarehouseLimits | None) -> str | None:
    """Why the column's type cannot be captured exactly (into ``warehouse``), or None."""
    base = str(row["base_type"])
    if why := _unsupported_type(base):  # oidvector and int2vector are arrays too
        return why
    if row["category"] == "A" and row["elem_type"]:
        element = str(row["elem_type"])
        if int(row["dimensions"] or 0) > 1:
            return "a multi-dimensional array arrives as an array of NULLs"
        why = (
            _unfit_numeric(element, int(row["typmod"]), warehouse)  # the array's typmod is its elements'
            or (_DOMAIN_ELEMENTS if row["elem_kind"] == "d" else None)
            or _not_known(element, str(row["elem_kind"]), str(row["elem_schema"]))
        )
        return _unsupported_elements(element) or (f"an array of {element} {why}" if why else None)
    why = _unfit_numeric(base, int(row["typmod"]), warehouse) or _not_known(
        base, str(row["type_kind"]), str(row["type_schema"])
    )
    return f"{base} {why}" if why else None


def _unsupported_type(name: str) -> str | None:
    """Why a type (by its name in ``pg_type``) is never captured as its value, or None."""
    return f"{name} {UNSUPPORTED_TYPES[name]}" if name in UNSUPPORTED_TYPES else None


def _unsupported_elements(element: str) -> str | None:
    """Why an array of ``element`` (its name in ``pg_type``) is never captured as its value, or None."""
    why = UNSUPPORTED_TYPES.get(element) or _UNSUPPORTED_ARRAY_ELEMENTS.get(element)
    return f"an array of {element} {why}" if why else None


_TYPMOD = re.compile(r"\(\d+(,\d+)?\)")


def refused_columns(contract: TableContract) -> dict[str, str]:
    """Each column a stored contract still captures whose type this release refuses (a contract written before
    the refusal, or by hand), with why. Judged by the types' names, which is all a contract keeps: a domain's,
    a composite's or an extension's type is refused when the catalog is read (``cdcflow schemas check``)."""
    refused = {}
    for column in contract.live_columns:
        name = _TYPMOD.sub("", column.pg_type).strip()  # format_type's spelling: bit(3), bit varying(8)
        why = _unsupported_type("varbit" if name == "bit varying" else name)
        if why is None and column.semantic == "array" and column.items is not None:
            why = _unsupported_elements(column.items.pg_type)
        if why is not None:
            refused[column.name] = why
    return refused


def _not_known(name: str, kind: str, schema: str) -> str | None:
    """Why the connector does not send a type of this kind at all (it leaves out the columns of types it does not
    know, so they would read as NULL), or None. Enums of any schema are sent, as text."""
    if kind == "c":
        return "is a composite type, which is not sent at all"
    if kind == "m":
        return "is a multirange, which is not sent at all"
    if kind == "r" and schema != "pg_catalog":
        return "is a range type of its own, which is not sent at all"
    if kind == "b" and schema != "pg_catalog" and name not in _EXTENSION_TYPES:
        known = ", ".join(sorted(_EXTENSION_TYPES))
        return f"is an extension's type, which is not sent at all (of extensions' types the connector sends {known})"
    return None


def _column(row: dict[str, Any]) -> Column:
    name, pg_type = str(row["attname"]), str(row["formatted"])
    nullable = not row["attnotnull"]
    if row["category"] == "A" and row["elem_type"]:
        element_type = str(row["elem_type"])
        # the array's own typmod applies to its elements (numeric(10,2)[])
        items = column_from_catalog("element", element_type, int(row["typmod"]), element_type, True)
        return Column(name, "array", pg_type, nullable, items=items)
    return column_from_catalog(name, str(row["base_type"]), int(row["typmod"]), pg_type, nullable)


def _exclude_it(schema: str, table: str, column: str) -> str:
    return (
        "Exclude the column from capture in both the connector (column.exclude.list) and the writer "
        f"(CDCFLOW_WRITER__EXCLUDE_COLUMNS) with {re.escape(f'{schema}.{table}.{column}')!r}"
    )


def _captured(
    schema: str,
    table: str,
    rows: list[dict[str, Any]],
    excluded: list[re.Pattern[str]],
    warehouse: WarehouseLimits | None,
) -> tuple[list[dict[str, Any]], tuple[tuple[str, str], ...]]:
    """The catalog rows of the columns change events carry, and the others with why; a column that refuses
    the table raises :class:`UnsupportedColumnError`, which names every such column of it (one line each)."""
    captured, uncaptured, refused = [], [], []
    for row in rows:
        name = str(row["attname"])
        if any(p.fullmatch(f"{schema}.{table}.{name}") for p in excluded):
            uncaptured.append((name, _EXCLUDED))
        elif row["is_generated"]:
            uncaptured.append((name, GENERATED))
        elif why := _refusal(schema, table, row, warehouse):
            refused.append(why)
        else:
            captured.append(row)
    if refused:
        raise UnsupportedColumnError("\n".join(refused))
    if alike := names_alike(str(row["attname"]) for row in captured):
        # Debezium fails the connector's task on such a table too: see publishing_hazards
        raise UnsupportedColumnError(
            f"{schema}.{table}: columns {alike[0]!r} and {alike[1]!r} differ only in case: the warehouse matches "
            "column names without regard to case, and Debezium fails the connector's task on such a table. Rename "
            "one of them"
        )
    return captured, tuple(uncaptured)


def _refusal(schema: str, table: str, row: dict[str, Any], warehouse: WarehouseLimits | None) -> str | None:
    """Why a captured column refuses its table, with the remedy, or None."""
    name, exclude_it = str(row["attname"]), _exclude_it(schema, table, str(row["attname"]))
    if why := _unsupported(row, warehouse):
        return (
            f"{schema}.{table}.{name} ({row['formatted']}): {why}, so its values would change silently. "
            f"{exclude_it}, or change its type"
        )
    if not is_safe_name(name):
        return f"{schema}.{table}.{name!r}: a column name holds {NAME_RULE}. {exclude_it}, or rename the column"
    if why := why_reserved(name, warehouse):
        return f"{schema}.{table}.{name!r}: {why}. {exclude_it}, or rename the column"
    return None


def _contract(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    excluded: list[re.Pattern[str]],
    warehouse: WarehouseLimits | None,
) -> TableContract:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cursor:
        found = cursor.execute(_COLUMNS_SQL, (schema, table)).fetchall()
        rows, uncaptured = _captured(schema, table, found, excluded, warehouse)
    identity_row = conn.execute(_IDENTITY_SQL, (schema, table)).fetchone()
    identity = _IDENTITY.get(str(identity_row[0]) if identity_row else "d", "default")
    key = _row_key(conn, schema, table, identity)
    doc = f"Row image of {schema}.{table} as captured from PostgreSQL."
    return TableContract(
        schema,
        table,
        tuple(_column(r) for r in rows),
        key,
        doc=doc,
        replica_identity=identity,  # type: ignore[arg-type]
        uncaptured=uncaptured,
    )


def _row_key(conn: psycopg.Connection[Any], schema: str, table: str, identity: str) -> tuple[str, ...]:
    """The columns Debezium keys the table's change events by, when they identify a row and every change event
    carries them; otherwise :class:`NoPrimaryKeyError` says why and what to do."""
    from psycopg.rows import dict_row

    qualified = f"{schema}.{table}"
    with conn.cursor(row_factory=dict_row) as cursor:
        indexes = cursor.execute(_UNIQUE_INDEXES_SQL, (schema, table)).fetchall()
    if not indexes:
        raise NoPrimaryKeyError(
            f"{qualified} has no primary key and no unique index: its change events carry no key, so cdcflow "
            "cannot tell its rows apart. Add a primary key (ALTER TABLE … ADD PRIMARY KEY) or leave the table "
            "out of the connector"
        )
    first = indexes[0]
    name, columns = str(first["index"]), tuple(str(c) for c in first["columns"])
    if not first["is_primary"] and (flaw := _unusable(first)):
        raise NoPrimaryKeyError(
            f"{qualified} has no primary key, and Debezium keys its change events by its first unique index, "
            f"{name}, which {flaw}: it does not identify a row. Add a primary key, or mark a unique index on "
            f"NOT NULL columns as the first (ALTER TABLE {qualified} CLUSTER ON <index>)"
        )
    if identity == "index" and not first["is_identity"]:
        raise NoPrimaryKeyError(
            f"{qualified}'s REPLICA IDENTITY is an index other than its key {name} {list(columns)}: a delete's "
            f"change event would not carry the key. ALTER TABLE {qualified} REPLICA IDENTITY USING INDEX {name} "
            "(or FULL)"
        )
    return columns


def _unusable(index: dict[str, Any]) -> str | None:
    """Why a unique index does not identify a row (NULLs are never equal, so a nullable column admits copies)."""
    if index["has_expression"]:
        return "indexes an expression, not columns"
    if index["is_partial"]:
        return "is partial (it holds only some rows)"
    if not index["is_valid"]:
        return "is not valid (a failed CREATE INDEX CONCURRENTLY)"
    if index["nullable"]:
        return f"has nullable column(s) {list(index['nullable'])}"
    return None


def table_key(dsn: str, table: str, *, timeout_s: float | None = None) -> tuple[str, ...] | None:
    """The key columns of ``schema.table`` (its contract's), or None when there is no such table; raises
    :class:`NoPrimaryKeyError` as :func:`contracts_from_catalog` does for a table without a usable key."""
    schema, name = table.split(".", 1)
    with _catalog(dsn, timeout_s) as conn:
        row = conn.execute(_IDENTITY_SQL, (schema, name)).fetchone()
        if row is None:
            return None
        return _row_key(conn, schema, name, _IDENTITY.get(str(row[0]), "default"))


_PUBLISHING_SQL = """
select n.nspname, c.relname, c.relpersistence = 'u' as unlogged, c.relreplident = 'n'
       or c.relreplident = 'd' and not exists (
          select 1 from pg_index i where i.indrelid = c.oid and i.indisprimary) as without_identity,
       c.relreplident,
       (select array_agg(a.attname::text order by a.attnum) from pg_attribute a
         where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped and lower(a.attname) in (
               select lower(b.attname) from pg_attribute b
                where b.attrelid = c.oid and b.attnum > 0 and not b.attisdropped
                group by lower(b.attname) having count(*) > 1)) as names_alike,
       c.relrowsecurity and not (
           (select r.rolsuper or r.rolbypassrls from pg_roles r where r.rolname = current_user)
           or pg_has_role(current_user, c.relowner, 'USAGE') and not c.relforcerowsecurity
           or exists (select 1 from pg_policy p where p.polrelid = c.oid and p.polpermissive
                         and p.polcmd in ('r', '*') and pg_get_expr(p.polqual, p.polrelid) = 'true'
                         and exists (select 1 from unnest(p.polroles) as g(role)
                                      where case when g.role = 0 then true
                                                 else pg_has_role(current_user, g.role, 'USAGE') end))
              and not exists (select 1 from pg_policy p where p.polrelid = c.oid and not p.polpermissive
                                 and p.polcmd in ('r', '*')
                                 and coalesce(pg_get_expr(p.polqual, p.polrelid), 'true') <> 'true'
                                 and exists (select 1 from unnest(p.polroles) as g(role)
                                              where case when g.role = 0 then true
                                                         else pg_has_role(current_user, g.role, 'USAGE') end))
       ) as rows_hidden,
       current_user
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where c.relkind in ('r', 'p') and not c.relispartition
   and n.nspname not in ('pg_catalog', 'information_schema')
   and c.relpersistence <> 't'
 order by 1, 2
"""


HazardKind = Literal[
    "unlogged", "columns_differ_in_case", "no_replica_identity", "name_unroutable", "rows_hidden_by_policy"
]
"""Why a table must not be captured as it is: no publication can take it, Debezium fails on it, PostgreSQL would
then refuse its UPDATE and DELETE, its changes would reach a topic named after another table (or none cdcflow
reads), or its row-level security hides rows from the connector's snapshots."""
HAZARD_KINDS: tuple[HazardKind, ...] = get_args(HazardKind)


class PublishingHazard(NamedTuple):
    kind: HazardKind
    why: str  # what publishing it does, and the remedy


def publishing_hazards(dsn: str, *, timeout_s: float | None = None) -> dict[str, PublishingHazard]:
    """Each ``schema.table`` that must not be captured as it is, with what that would do and the remedy: an
    UNLOGGED table cannot be published at all (the connector's filtered publication then fails to update and the
    whole source stops), Debezium fails the connector's task on a table with two column names that differ only
    in case, PostgreSQL refuses UPDATE and DELETE on a published table without a replica identity, a table whose
    schema or table name is not a plain identifier has its changes sent to a topic the writer cannot tell from
    another table's (:func:`_unroutable`), and a table whose row-level security applies to the user of ``dsn``
    (the connector's) shows that user's snapshots only the rows its policies let it see. Raises as
    :func:`contracts_from_catalog` does."""
    with _catalog(dsn, timeout_s) as conn:
        rows = conn.execute(_PUBLISHING_SQL).fetchall()
    hazards = {}
    for schema, name, unlogged, without_identity, identity, case_alike, rows_hidden, user in rows:
        table = f"{schema}.{name}"
        if unlogged:
            remedy = f"ALTER TABLE {table} SET LOGGED"
            hazards[table] = PublishingHazard(
                "unlogged",
                f"{table} is UNLOGGED: PostgreSQL cannot publish it, so Debezium fails to update its filtered "
                "publication when the connector starts and captures nothing of the whole source (its task "
                f"restarts over and over). {remedy}, or leave it out of the include list",
            )
        elif case_alike:
            hazards[table] = PublishingHazard(
                "columns_differ_in_case",
                f"{table} has columns whose names differ only in case ({', '.join(case_alike)}): Debezium fails the "
                'connector\'s task on it ("has columns that differ only by case") and nothing of the whole source is '
                "captured. Rename one of them, or leave the table out of the include list",
            )
        elif without_identity:
            why = "REPLICA IDENTITY NOTHING" if identity == "n" else "no primary key and REPLICA IDENTITY DEFAULT"
            hazards[table] = PublishingHazard(
                "no_replica_identity",
                f"{table} has {why}: once published, PostgreSQL refuses every UPDATE and DELETE of it. Give it one "
                f"first: ALTER TABLE {table} REPLICA IDENTITY USING INDEX <unique index on NOT NULL columns> "
                "(or FULL, or add a primary key)",
            )
        elif unroutable := _unroutable(schema, name):
            hazards[table] = PublishingHazard("name_unroutable", unroutable)
        elif rows_hidden:
            hazards[table] = PublishingHazard("rows_hidden_by_policy", _rows_hidden(table, str(user)))
    return hazards


_PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OUTSIDE_TOPIC_NAMES = re.compile(r"[^A-Za-z0-9._-]")  # what Kafka refuses in a topic name


def _unroutable(schema: str, name: str) -> str | None:
    """Why the changes of ``schema.name`` would not reach its own table, or None: Debezium names a table's topic
    ``<prefix>.<schema>.<table>`` with each character Kafka refuses made ``_`` (``t$x`` and ``t x`` write to
    ``t_x``'s topic), and the writer finds a table by its topic's last two parts, plain identifiers only."""
    if _PLAIN_IDENTIFIER.fullmatch(schema) and _PLAIN_IDENTIFIER.fullmatch(name):
        return None
    table = f"{schema}.{name}"
    parts = [_OUTSIDE_TOPIC_NAMES.sub("_", part) for part in (schema, name)]
    topic = ".".join(parts)
    lands = (
        f"Debezium sends its changes to the topic of {topic} (each character Kafka refuses made '_'), where the "
        f"writer takes them for {topic}'s changes"
        if all(_PLAIN_IDENTIFIER.fullmatch(part) for part in parts)
        else f"the writer cannot name a table from its topic (<prefix>.{topic}) and dead-letters every change"
    )
    return (
        f"{table!r}: a schema or table name cdcflow captures is letters, digits and '_', not starting with a digit; "
        f"{lands}. Rename it (ALTER TABLE … RENAME TO …), or leave it out of the include list"
    )


def _rows_hidden(table: str, user: str) -> str:
    return (
        f"{table} has row-level security that applies to {user}, the user the connector reads it as: Debezium's "
        "snapshots and backfills would read only the rows its policies show that user (none without a policy), "
        f"with no error, and silver would lack the others. ALTER ROLE {user} BYPASSRLS (as a superuser), or give "
        f"it every row: CREATE POLICY <name> ON {table} FOR SELECT TO {user} USING (true)"
    )


# Debezium's connector (3.4) loads every type of the database when its task starts, reading the labels of each
# type in the enum category; one with no label of its own fails the task (a NullPointerException in its type
# registry), whatever tables the connector captures.
_UNLOADABLE_TYPES_SQL = """
select n.nspname, t.typname, t.typtype::text, (select b.typname from pg_type b where b.oid = t.typbasetype)
  from pg_type t join pg_namespace n on n.oid = t.typnamespace
 where t.typcategory = 'E' and n.nspname <> 'pg_toast'
   and not exists (select 1 from pg_enum e where e.enumtypid = t.oid)
 order by 1, 2
"""


def unloadable_types(dsn: str, *, timeout_s: float | None = None) -> dict[str, str]:
    """Each ``schema.type`` of the database that Debezium's connector fails on when its task starts, with what that
    does and the remedy: an enum declared with no label, or a domain over an enum. The whole source goes
    uncaptured, whichever schema holds the type. Raises as :func:`contracts_from_catalog` does."""
    with _catalog(dsn, timeout_s) as conn:
        rows = conn.execute(_UNLOADABLE_TYPES_SQL).fetchall()
    found = {}
    for schema, name, kind, base in rows:
        qualified = f"{schema}.{name}"
        if kind == "d":
            what, remedy = f"a domain over the enum {base}", f"give its columns the enum {base} and drop the domain"
        elif kind == "e":
            what, remedy = "an enum with no label", f"give it one (ALTER TYPE {qualified} ADD VALUE …) or drop it"
        else:
            what, remedy = "a type of the enum category with no label", "drop it"
        found[qualified] = (
            f"type {qualified} is {what}: Debezium's connector fails its task when it loads the database's types "
            f"(a NullPointerException in its type registry) and captures nothing of the source. Before the "
            f"connector starts, {remedy}"
        )
    return found


_INHERITED_SQL = """
select distinct n.nspname, c.relname
  from pg_inherits i
  join pg_class c on c.oid = i.inhparent
  join pg_namespace n on n.oid = c.relnamespace
  join pg_class child on child.oid = i.inhrelid
 where c.relkind = 'r' and not child.relispartition
 order by 1, 2
"""


def inheritance_parents(dsn: str, *, timeout_s: float | None = None) -> list[str]:
    """``schema.table`` of each plain table another table inherits from (``CREATE TABLE … INHERITS``, not
    declarative partitioning). A query of such a table reads its children's rows too, while PostgreSQL publishes
    a child's changes as the child's own: its snapshots must read ``ONLY`` it. Raises as
    :func:`contracts_from_catalog` does."""
    with _catalog(dsn, timeout_s) as conn:
        return [f"{schema}.{name}" for schema, name in conn.execute(_INHERITED_SQL).fetchall()]


def contracts_from_catalog(
    dsn: str,
    include: list[str],
    exclude: list[str] | None = None,
    exclude_columns: list[str] | None = None,
    *,
    warehouse: WarehouseLimits | None = None,
    timeout_s: float | None = None,
) -> list[TableContract]:
    """Contracts of the tables whose ``schema.table`` fully matches one ``include`` regex and no ``exclude``;
    columns whose ``schema.table.column`` fully matches an ``exclude_columns`` regex are left out (named in
    the contract as uncaptured). A column of a type the connector cannot carry, named like a column cdcflow
    adds, or named as ``warehouse`` refuses (services.common.contracts.reserved.warehouse_limits), raises
    :class:`UnsupportedColumnError` unless it is excluded: one naming every such column of every table.

    With ``timeout_s`` the connection attempt and each statement give up after it. A catalog out of reach
    raises :class:`CatalogUnreachableError`, an error PostgreSQL answers with :class:`CatalogQueryError`.
    """
    included = [re.compile(p) for p in include]
    excluded = [re.compile(p) for p in exclude or []]
    excluded_columns = [re.compile(p) for p in exclude_columns or []]
    with _catalog(dsn, timeout_s) as conn:
        tables = [(str(s), str(t)) for s, t in conn.execute(_TABLES_SQL).fetchall()]
        wanted = [
            (s, t)
            for s, t in tables
            if any(p.fullmatch(f"{s}.{t}") for p in included) and not any(p.fullmatch(f"{s}.{t}") for p in excluded)
        ]
        contracts, refused = [], []
        for s, t in wanted:
            try:
                contracts.append(_contract(conn, s, t, excluded_columns, warehouse))
            except UnsupportedColumnError as exc:  # every table's, so one pass of exclusions fixes them all
                refused.append(str(exc))
        if refused:
            raise UnsupportedColumnError("\n".join(refused))
        return contracts


@contextlib.contextmanager
def _catalog(dsn: str, timeout_s: float | None) -> Iterator[psycopg.Connection[Any]]:
    """A connection to read the catalog with; an outage raises :class:`CatalogUnreachableError`, an error
    PostgreSQL answers :class:`CatalogQueryError`."""
    # Loaded here, not with the module: the lake writer reads the catalog only when a table's schema changes.
    import psycopg

    try:
        with psycopg.connect(dsn if timeout_s is None else bounded_dsn(dsn, timeout_s)) as conn:
            yield conn
    except psycopg.OperationalError as exc:  # unreachable, shutting down, timed out: an outage, not an answer
        raise CatalogUnreachableError(f"PostgreSQL's catalog is out of reach: {str(exc).strip()}") from exc
    except psycopg.Error as exc:
        raise CatalogQueryError(f"PostgreSQL refused the catalog query: {str(exc).strip()}") from exc


def table_contract(
    dsn: str,
    table: str,
    *,
    exclude_columns: list[str] | None = None,
    warehouse: WarehouseLimits | None = None,
    timeout_s: float | None = None,
) -> TableContract | None:
    """The contract of one ``schema.table`` as the catalog has it now, or None when there is no such table;
    raises as :func:`contracts_from_catalog` does."""
    found = contracts_from_catalog(
        dsn, [re.escape(table)], exclude_columns=exclude_columns, warehouse=warehouse, timeout_s=timeout_s
    )
    return found[0] if found else None


_DEFAULTS_SQL = """
select a.attname
  from pg_attribute a
  join pg_class c on c.oid = a.attrelid
  join pg_namespace n on n.oid = c.relnamespace
 where n.nspname = %s and c.relname = %s and a.attname = any(%s) and not a.attisdropped
   and (a.atthasdef or a.atthasmissing)
 order by a.attnum
"""


def columns_with_defaults(dsn: str, table: str, columns: list[str], *, timeout_s: float | None = None) -> list[str]:
    """Of ``columns`` of ``schema.table``, those with a default: added with one, a column's existing rows hold
    it (``atthasmissing``, or the table rewritten) though no change event carried it. Raises as
    :func:`contracts_from_catalog` does."""
    schema, name = table.split(".", 1)
    with _catalog(dsn, timeout_s) as conn:
        return [str(r[0]) for r in conn.execute(_DEFAULTS_SQL, (schema, name, columns)).fetchall()]


def bounded_dsn(dsn: str, timeout_s: float) -> str:
    """``dsn`` whose connection attempt and statements give up after ``timeout_s``."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(
        dsn, connect_timeout=max(1, round(timeout_s)), options=f"-c statement_timeout={int(timeout_s * 1000)}"
    )
