"""Contracts generated from the live PostgreSQL catalog, and compatibility checks against it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from services.common.contracts import Column, TableContract
from services.common.contracts.catalog import (
    GENERATED,
    contracts_from_catalog,
    publishing_hazards,
    refused_columns,
    table_key,
)
from services.common.contracts.compat import compare
from services.common.contracts.errors import ContractError, NoPrimaryKeyError, UnsupportedColumnError
from services.common.contracts.reserved import warehouse_limits
from services.common.settings import Settings
from tests.fixtures.stack import login_role

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def scratch_schema(pg: Conn) -> Iterator[str]:
    name = f"cdcflow_test_{uuid.uuid4().hex[:8]}"
    pg.execute(f"create schema {name}".encode())
    yield name
    pg.execute(f"drop schema {name} cascade".encode())


def test_generated_contract_types(pg: Conn, settings: Settings, scratch_schema: str) -> None:
    s = scratch_schema
    pg.execute(f"create type {s}.mood as enum ('ok', 'meh')".encode())
    pg.execute(f"create domain {s}.money2 as numeric(12, 2) check (value >= 0)".encode())
    pg.execute(
        f"""create table {s}.things (
              id int not null, part smallint not null, mood {s}.mood, price {s}.money2, raw bytea,
              tags text[], amounts numeric(10, 3)[], blob jsonb, at timestamptz, seen timestamp, d date, t time,
              n numeric, f double precision, b boolean, u uuid, i interval, ms timestamp(3),
              primary key (part, id))""".encode()
    )
    (contract,) = contracts_from_catalog(settings.postgres.dsn(), [rf"{s}\..*"])
    semantic = {c.name: c.semantic for c in contract.columns}
    assert contract.primary_key == ("part", "id")  # key order, not column order
    assert semantic == {
        "id": "int32", "part": "int16", "mood": "string", "price": "decimal", "raw": "bytes", "tags": "array",
        "amounts": "array", "blob": "json", "at": "timestamptz", "seen": "timestamp", "d": "date", "t": "time",
        "n": "variable_decimal", "f": "float64", "b": "boolean", "u": "uuid", "i": "string", "ms": "timestamp_millis",
    }  # fmt: skip
    price = contract.column("price")
    assert (price.precision, price.scale, price.nullable) == (12, 2, True)
    amounts = contract.column("amounts").items
    assert amounts is not None
    assert (amounts.semantic, amounts.precision, amounts.scale) == ("decimal", 10, 3)
    assert contract.column("id").nullable is False


def test_a_partitioned_table_is_one_contract_and_generated_columns_are_named_not_captured(
    pg: Conn, settings: Settings, scratch_schema: str
) -> None:
    s = scratch_schema
    pg.execute(
        f"""create table {s}.readings (
              id bigint not null, taken_on date not null, celsius numeric(5, 2),
              fahrenheit numeric(7, 3) generated always as (celsius * 9 / 5 + 32) stored,
              primary key (id, taken_on)) partition by range (taken_on);
            create table {s}.readings_2025 partition of {s}.readings for values from ('2025-01-01') to ('2026-01-01');
            create table {s}.readings_rest partition of {s}.readings default""".encode()
    )
    (contract,) = contracts_from_catalog(settings.postgres.dsn(), [rf"{s}\..*"])
    assert contract.qualified_name == f"{s}.readings"
    assert [c.name for c in contract.columns] == ["id", "taken_on", "celsius"]
    assert contract.uncaptured == (("fahrenheit", GENERATED),)
    assert contract.primary_key == ("id", "taken_on")


# Types the connector leaves out of its events (it sends only the types it knows), each with the type it needs.
NOT_SENT = {
    "extension": ("{s}.cube", "create extension cube schema {s}", "cube is an extension's type, which is not sent"),
    "extension_domain": (
        "{s}.box3",
        "create extension cube schema {s}; create domain {s}.box3 as {s}.cube",
        "cube is an extension's type",
    ),
    "composite": ("{s}.pair", "create type {s}.pair as (a int, b text)", "pair is a composite type"),
    "composite_array": ("{s}.pair[]", "create type {s}.pair as (a int)", "an array of pair is a composite type"),
    "own_range": (
        "{s}.floatrange",
        "create type {s}.floatrange as range (subtype = float8)",
        "floatrange is a range type of its own",
    ),
    "multirange": ("int4multirange", "", "int4multirange is a multirange"),
    "regtype": ("regtype", "", "regtype is not sent at all"),
    "snapshot": ("txid_snapshot", "", "txid_snapshot is not sent at all"),
    "oidvector": ("oidvector", "", "oidvector arrives as an empty array"),
}


@pytest.mark.parametrize("case", list(NOT_SENT.values()), ids=list(NOT_SENT))
def test_a_type_the_connector_does_not_send_is_refused(
    pg: Conn, settings: Settings, scratch_schema: str, case: tuple[str, str, str]
) -> None:
    s, (declared, setup, why) = scratch_schema, case
    if setup:
        pg.execute(setup.format(s=s).encode())
    pg.execute(f"create table {s}.odd (id int primary key, odd {declared.format(s=s)})".encode())
    with pytest.raises(UnsupportedColumnError, match=re.escape(why)):
        contracts_from_catalog(settings.postgres.dsn(), [rf"{s}\.odd"])


def test_the_extension_types_and_enums_the_connector_sends_are_captured(
    pg: Conn, settings: Settings, scratch_schema: str
) -> None:
    s = scratch_schema
    pg.execute(
        f"""create extension citext schema {s}; create extension ltree schema {s};
            create type {s}.mood as enum ('a', 'b');
            create table {s}.fine (id int primary key, c {s}.citext, l {s}.ltree, la {s}.ltree[], m {s}.mood,
                                   ma {s}.mood[], r int4range, t tstzrange)""".encode()
    )
    (contract,) = contracts_from_catalog(settings.postgres.dsn(), [rf"{s}\.fine"])
    semantic = {c.name: c.semantic for c in contract.columns}
    assert semantic == {
        "id": "int32", "c": "string", "l": "string", "la": "array", "m": "string", "ma": "array", "r": "string",
        "t": "string",
    }  # fmt: skip


# Refused types a stored contract names well enough to be refused by those names alone (a contract written
# before the refusal, or by hand): format_type's spellings, which is what a contract keeps.
REFUSED_BY_NAME = [
    *("name", "bit", "bit(3)", "varbit", "varbit(8)", "point", "box", "tsquery", "pg_lsn", "regclass"),
    *("txid_snapshot", "oidvector", "int2vector", "interval[]", "interval year to month[]", "money[]", "xml[]"),
    *("time[]", "time(3)[]", "timetz[]", "timetz(0)[]", "name[]", "bit(2)[]", "varbit[]", "point[]", "line[]"),
]


@pytest.mark.parametrize("declared", REFUSED_BY_NAME)
def test_a_stored_contract_of_a_refused_type_is_refused_by_the_names_it_keeps(
    pg: Conn, settings: Settings, scratch_schema: str, declared: str
) -> None:
    s = scratch_schema
    pg.execute(f"create table {s}.odd (id int primary key, fine text, fines int[], odd {declared})".encode())
    with pytest.raises(UnsupportedColumnError, match=rf"{s}\.odd\.odd"):
        contracts_from_catalog(settings.postgres.dsn(), [rf"{s}\.odd"])
    # the contract as a release before the refusal wrote it: the column's format_type, an array's element's name
    rows = pg.execute(
        """select a.attname, format_type(a.atttypid, a.atttypmod), e.typname
           from pg_attribute a join pg_type t on t.oid = a.atttypid
           left join pg_type e on e.oid = t.typelem and t.typcategory = 'A'
           where a.attrelid = %s::regclass and a.attnum > 0 order by a.attnum""",
        (f"{s}.odd",),
    ).fetchall()
    columns = tuple(
        Column(str(name), "int32", str(formatted), nullable=False)
        if name == "id"
        else Column(str(name), "string", str(formatted))
        if element is None
        else Column(str(name), "array", str(formatted), items=Column("element", "string", str(element)))
        for name, formatted, element in rows
    )
    contract = TableContract(schema=s, table="odd", primary_key=("id",), columns=columns)
    assert list(refused_columns(contract)) == ["odd"]


@pytest.mark.parametrize(
    ("declared", "why"),
    [
        ("name", "name arrives as NULL"),
        ("bit(3)", "bit arrives as a bit set"),
        ("varbit", "varbit arrives as a bit set"),
        ("point", "point arrives as a geometry struct"),
        ("box", "box is not sent at all"),
        ("tsquery", "tsquery is not sent at all"),
        ("interval[]", "an array of interval is not sent at all"),
        ("money[]", "an array of money is not sent at all"),  # the column is missing from every event
        ("time[]", "an array of time arrives with its microseconds cut to milliseconds"),
        ("time(3)[]", "an array of time arrives with .* 24:00:00 as 00:00:00"),
        ("timetz[]", "an array of timetz arrives with its fractions of a second cut off"),
        ("{s}.positive[]", "an array of positive is a domain: the connector sends such an array as NULL"),
        ("integer[][]", "a multi-dimensional array arrives as an array of NULLs"),
        # valid NUMERICs no exact lake decimal holds (the writer would fail on the table at every start)
        ("numeric(1000, 0)", r"numeric has more digits than the lake's widest exact decimal \(76\)"),
        ("numeric(77, 2)[]", r"an array of numeric has more digits than the lake's widest exact decimal"),
        ("numeric(2, -3)", "numeric has a scale below zero, which no Parquet decimal takes"),
        ("numeric(3, 5)", "numeric has a scale above its precision, which no Parquet decimal takes"),
    ],
)
def test_a_type_the_connector_cannot_carry_is_refused_until_its_column_is_excluded(
    pg: Conn, settings: Settings, scratch_schema: str, declared: str, why: str
) -> None:
    s = scratch_schema
    pg.execute(f"create domain {s}.positive as integer check (value > 0)".encode())
    pg.execute(f"create table {s}.odd (id int primary key, fine text, odd {declared.format(s=s)})".encode())
    with pytest.raises(UnsupportedColumnError, match=why) as refused:
        contracts_from_catalog(settings.postgres.dsn(), [rf"{s}\.odd"])
    assert f"{s}.odd.odd" in str(refused.value)  # names the column and how to exclude it
    assert "column.exclude.list" in str(refused.value)
    (contract,) = contracts_from_catalog(settings.postgres.dsn(), [rf"{s}\.odd"], exclude_columns=[rf"{s}\.odd\.odd"])
    assert [c.name for c in contract.columns] == ["id", "fine"]
    ((column, reason),) = contract.uncaptured
    assert column == "odd"
    assert "excluded" in reason


def test_numerics_at_the_lakes_limits_keep_their_precision_and_scale(
    pg: Conn, settings: Settings, scratch_schema: str
) -> None:
    s = scratch_schema
    pg.execute(f"create domain {s}.wide as numeric(76, 38)".encode())
    pg.execute(
        f"create table {s}.edges (id int primary key, widest numeric(76, 0), w {s}.wide, tiny numeric(5, 5),"
        " many numeric(76, 76)[])".encode()
    )
    (contract,) = contracts_from_catalog(settings.postgres.dsn(), [rf"{s}\.edges"])
    shapes = {c.name: (c.precision, c.scale) for c in contract.columns if c.semantic == "decimal"}
    assert shapes == {"widest": (76, 0), "w": (76, 38), "tiny": (5, 5)}
    many = contract.column("many").items
    assert many is not None
    assert (many.precision, many.scale) == (76, 76)


def test_evolution_against_the_catalog(pg: Conn, settings: Settings, scratch_schema: str) -> None:
    s = scratch_schema
    pg.execute(f"create table {s}.evolving (id bigint primary key, amount numeric(20, 2))".encode())
    dsn, scope = settings.postgres.dsn(), [rf"{s}\.evolving"]
    (v1,) = contracts_from_catalog(dsn, scope)
    pg.execute(f"alter table {s}.evolving add column note text".encode())
    (v2,) = contracts_from_catalog(dsn, scope)
    assert [(c.kind, c.column, c.compatible) for c in compare(v1, v2)] == [("added", "note", True)]
    pg.execute(f"alter table {s}.evolving alter column amount type numeric(30, 4)".encode())
    (v3,) = contracts_from_catalog(dsn, scope)
    assert [(c.kind, c.compatible) for c in compare(v2, v3)] == [("type_changed", False)]


def test_a_table_without_primary_key_is_a_clear_error(pg: Conn, settings: Settings, scratch_schema: str) -> None:
    pg.execute(f"create table {scratch_schema}.keyless (x int)".encode())
    with pytest.raises(NoPrimaryKeyError, match=rf"{scratch_schema}\.keyless has no primary key and no unique index"):
        contracts_from_catalog(settings.postgres.dsn(), [rf"{scratch_schema}\..*"])


# Each table: its DDL (``{s}`` the schema), then the key its contract takes. Debezium keys a table without a
# primary key by its first unique index, clustered ones first, then by name: the contract takes the same.
KEYED_BY = {
    "by_primary_key": (
        "create table {s}.t (a int not null, b int not null, c int primary key);"
        "create unique index t_a on {s}.t (a); alter table {s}.t cluster on t_a",
        ("c",),
    ),
    "by_unique_constraint": (
        "create table {s}.t (code text not null, region int not null, note text, unique (code, region))",
        ("code", "region"),
    ),
    "by_first_name": (
        "create table {s}.t (a int not null, b int not null);"
        "create unique index t_2 on {s}.t (a); create unique index t_1 on {s}.t (b)",
        ("b",),
    ),
    "clustered_first": (
        "create table {s}.t (a int not null, b int not null);"
        "create unique index t_2 on {s}.t (a); create unique index t_1 on {s}.t (b); alter table {s}.t cluster on t_2",
        ("a",),
    ),
    "by_replica_identity_index": (
        "create table {s}.t (a int not null, b text); create unique index t_a on {s}.t (a);"
        "alter table {s}.t replica identity using index t_a",
        ("a",),
    ),
}


@pytest.mark.parametrize(("ddl", "key"), list(KEYED_BY.values()), ids=list(KEYED_BY))
def test_a_table_is_keyed_as_debezium_keys_it(
    pg: Conn, settings: Settings, scratch_schema: str, ddl: str, key: tuple[str, ...]
) -> None:
    pg.execute(ddl.format(s=scratch_schema).encode())
    (contract,) = contracts_from_catalog(settings.postgres.dsn(), [rf"{scratch_schema}\.t"])
    assert contract.primary_key == key
    assert table_key(settings.postgres.dsn(), f"{scratch_schema}.t") == key


UNKEYED = {
    "nullable": ("create table {s}.t (a int, b int); create unique index t_a on {s}.t (a)", "nullable column"),
    "partial": (
        "create table {s}.t (a int not null); create unique index t_a on {s}.t (a) where a > 0",
        "is partial",
    ),
    "expression": (
        "create table {s}.t (a text not null); create unique index t_a on {s}.t (lower(a))",
        "indexes an expression",
    ),
    "nullable_first": (  # a usable index later does not help: Debezium keys by the first
        "create table {s}.t (a int, b int not null);"
        "create unique index t_1 on {s}.t (a); create unique index t_2 on {s}.t (b)",
        r"first unique index, t_1, which has nullable column\(s\) \['a'\]",
    ),
    "identity_elsewhere": (
        "create table {s}.t (a int not null, b int not null, c int primary key);"
        "create unique index t_a on {s}.t (a); alter table {s}.t replica identity using index t_a",
        r"REPLICA IDENTITY is an index other than its key t_pkey \['c'\]",
    ),
}


@pytest.mark.parametrize(("ddl", "why"), list(UNKEYED.values()), ids=list(UNKEYED))
def test_a_key_that_does_not_identify_a_row_is_refused_with_why(
    pg: Conn, settings: Settings, scratch_schema: str, ddl: str, why: str
) -> None:
    pg.execute(ddl.format(s=scratch_schema).encode())
    with pytest.raises(NoPrimaryKeyError, match=why):
        contracts_from_catalog(settings.postgres.dsn(), [rf"{scratch_schema}\.t"])
    with pytest.raises(NoPrimaryKeyError, match=why):
        table_key(settings.postgres.dsn(), f"{scratch_schema}.t")


def test_tables_that_must_not_be_published_are_named_with_why(
    pg: Conn, settings: Settings, scratch_schema: str
) -> None:
    s = scratch_schema
    pg.execute(
        f"""create table {s}.keyed (id int primary key);
            create table {s}.no_identity (id int primary key); alter table {s}.no_identity replica identity nothing;
            create table {s}.unkeyed (a int not null unique);
            create table {s}.full_row (a int); alter table {s}.full_row replica identity full;
            create table {s}.by_index (a int not null); create unique index by_index_a on {s}.by_index (a);
            alter table {s}.by_index replica identity using index by_index_a;
            create unlogged table {s}.staging (id int primary key);
            create table {s}.cased (id int primary key, "Note" text, "ID" int, note text, other text);
            create table {s}.cased_once (id int primary key, "ID" int); alter table {s}.cased_once drop column "ID"
            """.encode()
    )
    hazards = {t: h for t, h in publishing_hazards(settings.postgres.dsn()).items() if t.startswith(f"{s}.")}
    assert {t: h.kind for t, h in hazards.items()} == {
        f"{s}.cased": "columns_differ_in_case",
        f"{s}.no_identity": "no_replica_identity",
        f"{s}.staging": "unlogged",
        f"{s}.unkeyed": "no_replica_identity",
    }
    assert "differ only in case (id, Note, ID, note): Debezium fails" in hazards[f"{s}.cased"].why
    assert "REPLICA IDENTITY NOTHING" in hazards[f"{s}.no_identity"].why
    assert "no primary key and REPLICA IDENTITY DEFAULT" in hazards[f"{s}.unkeyed"].why
    assert f"ALTER TABLE {s}.unkeyed REPLICA IDENTITY USING INDEX" in hazards[f"{s}.unkeyed"].why
    assert f"ALTER TABLE {s}.staging SET LOGGED" in hazards[f"{s}.staging"].why
    # what the hazards are: PostgreSQL refuses to publish the one, and the other's UPDATE once published
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unlogged"):
        pg.execute(f"create publication {s}_staging for table {s}.staging".encode())
    pg.execute(f"create publication {s}_pub for table {s}.unkeyed".encode())
    try:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="does not have a replica identity"):
            pg.execute(f"update {s}.unkeyed set a = a + 1".encode())
    finally:
        pg.execute(f"drop publication {s}_pub".encode())


RLS_SQL = """
create table {s}.no_policy (id int primary key);
create table {s}.tenants (id int primary key, tenant text);
create table {s}.shown (id int primary key);
create table {s}.narrowed (id int primary key);
create table {s}.plain (id int primary key);
insert into {s}.no_policy select generate_series(1, 4);
insert into {s}.tenants select g, case when g < 3 then 'a' else 'b' end from generate_series(1, 4) g;
insert into {s}.shown select generate_series(1, 4);
insert into {s}.narrowed select generate_series(1, 4);
insert into {s}.plain select generate_series(1, 4);
alter table {s}.no_policy enable row level security;
alter table {s}.tenants enable row level security;
create policy tenant_a on {s}.tenants for select to {role} using (tenant = 'a');
alter table {s}.shown enable row level security;
create policy every_row on {s}.shown for select to {role} using (true);
alter table {s}.narrowed enable row level security;
create policy every_row on {s}.narrowed for select to public using (true);
create policy first_only on {s}.narrowed as restrictive for select to {role} using (id < 2);
grant select on all tables in schema {s} to {role};
"""


def test_row_level_security_that_hides_rows_from_the_connectors_user_is_a_hazard(
    pg: Conn, settings: Settings, scratch_schema: str
) -> None:
    s = scratch_schema
    grants = [f"usage on schema {s}"]
    with login_role(pg, settings, "rls_reader", grants) as as_reader:
        role, reader = as_reader.postgres.user, as_reader.postgres.dsn()
        pg.execute(RLS_SQL.format(s=s, role=role).encode())

        def hidden(dsn: str) -> dict[str, str]:
            return {t: h.kind for t, h in publishing_hazards(dsn).items() if t.startswith(f"{s}.")}

        kind = "rows_hidden_by_policy"
        assert hidden(reader) == {f"{s}.no_policy": kind, f"{s}.tenants": kind, f"{s}.narrowed": kind}
        why = publishing_hazards(reader)[f"{s}.tenants"].why
        assert f"row-level security that applies to {role}, the user the connector reads it as" in why
        assert f"ALTER ROLE {role} BYPASSRLS" in why
        # what the hazard is: the rows a snapshot's SELECT as that user reads, without an error
        with psycopg.connect(reader) as conn:
            seen = {t: conn.execute(f"select count(*) from {s}.{t}".encode()).fetchone() for t in RLS_TABLES}
        assert seen == {"no_policy": (0,), "tenants": (2,), "shown": (4,), "narrowed": (1,), "plain": (4,)}
        assert hidden(settings.postgres.dsn()) == {}  # the stack's own user is a superuser
        pg.execute(f"alter role {role} bypassrls".encode())  # the remedy
        assert hidden(reader) == {}


RLS_TABLES = ("no_policy", "tenants", "shown", "narrowed", "plain")


UNSAFE_NAME = "a column name holds letters, digits"
RESERVED_NAME = "cdcflow adds a column of that name"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        *((odd, UNSAFE_NAME) for odd in ("e-mail", "Unit Price", "naïve", "1st")),
        *((taken, RESERVED_NAME) for taken in ("_op", "_Source_Lsn", "_loaded_at", "_lake_file", "_is_current")),
    ],
)
def test_a_column_name_a_contract_cannot_hold_is_refused_until_the_column_is_excluded(
    pg: Conn, settings: Settings, scratch_schema: str, name: str, why: str
) -> None:
    s = scratch_schema
    pg.execute(
        sql.SQL("create table {} (id int primary key, valid_from date, is_current bool, {} text)").format(
            sql.Identifier(s, "named"), sql.Identifier(name)
        )
    )
    with pytest.raises(UnsupportedColumnError, match=why) as refused:
        contracts_from_catalog(settings.postgres.dsn(), [rf"{s}\.named"])
    assert repr(name) in str(refused.value)
    assert "column.exclude.list" in str(refused.value)
    excluded = re.escape(f"{s}.named.{name}")
    (contract,) = contracts_from_catalog(settings.postgres.dsn(), [rf"{s}\.named"], exclude_columns=[excluded])
    assert [c.name for c in contract.columns] == ["id", "valid_from", "is_current"]  # a history's names stay
    assert [column for column, _ in contract.uncaptured] == [name]


def test_a_table_name_a_contract_cannot_hold_says_how_to_leave_it_out(
    pg: Conn, settings: Settings, scratch_schema: str
) -> None:
    pg.execute(sql.SQL("create table {} (id int primary key)").format(sql.Identifier(scratch_schema, "order-items")))
    with pytest.raises(ContractError, match="not a safe schema or table name") as refused:
        contracts_from_catalog(settings.postgres.dsn(), [rf"{scratch_schema}\.order-items"])
    assert "table.include.list" in str(refused.value)


def test_columns_whose_names_differ_only_in_case_are_refused(pg: Conn, settings: Settings, scratch_schema: str) -> None:
    s = scratch_schema
    pg.execute(
        sql.SQL('create table {} (id int primary key, "ID" int, "Note" text, note text)').format(
            sql.Identifier(s, "cased")
        )
    )
    with pytest.raises(UnsupportedColumnError, match="columns 'id' and 'ID' differ only in case"):
        contracts_from_catalog(settings.postgres.dsn(), [rf"{s}\.cased"])
    (contract,) = contracts_from_catalog(
        settings.postgres.dsn(), [rf"{s}\.cased"], exclude_columns=[re.escape(f"{s}.cased.") + "(ID|Note)"]
    )
    assert [c.name for c in contract.columns] == ["id", "note"]


BIGQUERY_REFUSES = {
    "dt": "BigQuery's loads read the lake's folders as columns of that name",
    "hour": "BigQuery's loads read the lake's folders as columns of that name",
    "_file_name": "BigQuery keeps column names starting with _FILE_",
    "amount$": "a BigQuery column name cannot hold '$'",
}


def test_a_column_bigquery_refuses_is_refused_for_bigquery_alone(
    pg: Conn, settings: Settings, scratch_schema: str
) -> None:
    s = scratch_schema
    pg.execute(
        sql.SQL('create table {} (id int primary key, dt date, hour int, _file_name text, "amount$" numeric)').format(
            sql.Identifier(s, "hourly")
        )
    )
    dsn, hourly = settings.postgres.dsn(), [rf"{s}\.hourly"]
    (contract,) = contracts_from_catalog(dsn, hourly)
    assert [c.name for c in contract.columns] == ["id", *BIGQUERY_REFUSES]
    bigquery = warehouse_limits("bigquery")
    for column, why in BIGQUERY_REFUSES.items():
        others = [re.escape(f"{s}.hourly.{other}") for other in BIGQUERY_REFUSES if other != column]
        with pytest.raises(UnsupportedColumnError, match=re.escape(f"{column!r}: {why}")):
            contracts_from_catalog(dsn, hourly, exclude_columns=others, warehouse=bigquery)
    every = [re.escape(f"{s}.hourly.{column}") for column in BIGQUERY_REFUSES]
    (contract,) = contracts_from_catalog(dsn, hourly, exclude_columns=every, warehouse=bigquery)
    assert [c.name for c in contract.columns] == ["id"]


def test_every_column_that_refuses_its_table_is_named_at_once(
    pg: Conn, settings: Settings, scratch_schema: str
) -> None:
    s = scratch_schema
    pg.execute(
        f"""create table {s}.slots (id int primary key, at time[], fine text, "_op" text);
            create table {s}.plain (id int primary key, fine text);
            create table {s}.flags (id int primary key, bits bit(4))""".encode()
    )
    with pytest.raises(UnsupportedColumnError) as refused:
        contracts_from_catalog(settings.postgres.dsn(), [rf"{s}\..*"])
    lines = str(refused.value).splitlines()
    named = (f"{s}.slots.at (time without time zone[])", f"{s}.slots.'_op'", f"{s}.flags.bits (bit(4))")
    assert len(lines) == len(named)
    assert all(sum(line.startswith(column) for line in lines) == 1 for column in named)
    assert all("column.exclude.list" in line for line in lines)  # each with its own remedy
    every = [re.escape(f"{s}.{column}") for column in ("slots.at", "slots._op", "flags.bits")]
    found = contracts_from_catalog(settings.postgres.dsn(), [rf"{s}\..*"], exclude_columns=every)
    assert sorted((c.table, [col.name for col in c.columns]) for c in found) == [
        ("flags", ["id"]),
        ("plain", ["id", "fine"]),
        ("slots", ["id", "fine"]),
    ]


def test_a_numeric_bigquery_holds_no_exact_type_for_is_refused_for_bigquery_alone(
    pg: Conn, settings: Settings, scratch_schema: str
) -> None:
    s = scratch_schema
    pg.execute(f"create domain {s}.wide as numeric(76, 38)".encode())
    pg.execute(
        f"create table {s}.ledger (id int primary key, w {s}.wide, n numeric, m money, fine numeric(38, 38),"
        " big numeric(76, 0), tiny numeric(40, 40)[])".encode()
    )
    dsn, ledger, bigquery = settings.postgres.dsn(), [rf"{s}\.ledger"], warehouse_limits("bigquery")
    (contract,) = contracts_from_catalog(dsn, ledger)
    assert [c.name for c in contract.columns] == ["id", "w", "n", "m", "fine", "big", "tiny"]
    refused = {"big": "numeric has more digits before", "tiny": "an array of numeric has more digits after"}
    for column, why in refused.items():
        others = [re.escape(f"{s}.ledger.{other}") for other in refused if other != column]
        with pytest.raises(UnsupportedColumnError, match=rf"{column} \(.*\): {why} the point than BigQuery's widest"):
            contracts_from_catalog(dsn, ledger, exclude_columns=others, warehouse=bigquery)
    every = [re.escape(f"{s}.ledger.{column}") for column in refused]
    (contract,) = contracts_from_catalog(dsn, ledger, exclude_columns=every, warehouse=bigquery)
    assert [c.name for c in contract.columns] == ["id", "w", "n", "m", "fine"]
