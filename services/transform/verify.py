"""``cdcflow verify``: every captured PostgreSQL table equals its silver table, row for row.

For each contract the source table and ``silver.<table>`` are read in full and each row becomes its primary
key and a digest of its canonical values (:mod:`services.transform.canonical`). The source side is held as
key → digest (16 bytes a row) while silver is streamed against it, so memory grows with the source's row
count, not its width. Rows are ``missing`` (in the source, not in silver), ``extra`` (in silver only) or
``different``; the first few differing keys are reported with the columns that differ.

PostgreSQL is read in one REPEATABLE READ transaction (one snapshot for the table). Run verify once the
workload has stopped and the pipeline has drained: it compares states, so a change still on its way is drift.
A contract whose source table no longer exists is skipped and reported (a DROP is not captured); columns
no change event carries (stored generated columns, columns excluded from capture) are listed as not
compared, with why.

Its length (past the ~400 lines of most modules): the source reader, the silver reader and the report are
small, but share the row-digest contract that makes a comparison meaningful.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol

import duckdb
import psycopg
from psycopg import sql
from psycopg.abc import AdaptContext
from psycopg.adapt import Loader
from psycopg.pq import Format
from rich.console import Console
from rich.table import Table

from services.common.contracts import Column, ContractRegistry, TableContract, load_contracts
from services.common.contracts.store import contracts_from_lake
from services.common.lake import open_lake
from services.common.settings import Settings
from services.common.sql import quote_name
from services.stack.connect import load_connector, resolve_env
from services.stack.sources import sources, unpublished_tables
from services.transform.canonical import canonical, row_digest
from services.transform.errors import VerifyError
from services.transform.silver import left_out, model_name

__all__ = [
    "DuckDBSilver",
    "LockedTable",
    "PostgresSource",
    "RowDifference",
    "SilverReader",
    "SourceReader",
    "TableComparison",
    "VerifyReport",
    "canonical_key",
    "compare_table",
    "key_columns",
    "open_silver",
    "print_report",
    "verify",
    "verify_contracts",
    "verify_warehouse",
]

Key = tuple[str, ...]
Problem = Literal["missing", "extra", "different"]

_TEXT_TYPES = ("text", "character", "char", "varchar", "bpchar", "name", "citext")
_BATCH = 5_000


class RowReader(Protocol):
    """One side of the comparison: rows of a table in the contract's column order."""

    def exists(self, contract: TableContract) -> bool: ...

    def rows(self, contract: TableContract) -> Iterator[Sequence[Any]]: ...

    def row(self, contract: TableContract, key: Sequence[Any]) -> Sequence[Any] | None:
        """The row whose primary key columns hold ``key`` (raw values), if any."""
        ...


class SourceReader(RowReader, Protocol):
    """PostgreSQL's side: also which columns a table has now."""

    def columns(self, contract: TableContract) -> frozenset[str] | None:
        """The names of the table's columns; None when there is no such table."""
        ...


class SilverReader(RowReader, Protocol):
    """Silver's side: also every live row's key and the topic partition of its newest version."""

    def keys(self, contract: TableContract) -> Iterator[tuple[tuple[Any, ...], int]]: ...


@dataclass(frozen=True, slots=True)
class RowDifference:
    key: Key
    problem: Problem
    columns: tuple[str, ...] = ()

    def __str__(self) -> str:
        key = ", ".join(self.key)
        detail = f" (columns: {', '.join(self.columns)})" if self.columns else ""
        return f"{self.problem}: ({key}){detail}"


@dataclass(slots=True)
class TableComparison:
    table: str
    silver: str
    source_rows: int = 0
    silver_rows: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    first: list[RowDifference] = field(default_factory=list)
    error: str | None = None  # cannot compare: drift (e.g. silver table missing)
    skipped: str | None = None  # not compared on purpose (the source table was dropped)
    not_compared: tuple[tuple[str, str], ...] = ()  # columns not compared (uncaptured or dropped), and why

    @property
    def drift(self) -> bool:
        return self.error is not None or bool(self.missing or self.extra or self.different)


@dataclass(slots=True)
class VerifyReport:
    tables: list[TableComparison] = field(default_factory=list)

    @property
    def drift(self) -> bool:
        return any(t.drift for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        """The report as ``--json`` prints it: each table's counts, verdict and first differing keys."""
        return {"drift": self.drift, "tables": [{**asdict(t), "drift": t.drift} for t in self.tables]}


# --- PostgreSQL ----------------------------------------------------------------------------------


def _output_of(value: str) -> str:
    """The value's text as its type's output function writes it (concat() uses it; NULL stays NULL)."""
    return f"(case when {{0}} is null then null else concat({value}) end)"


def _is_hstore(column: Column | None) -> bool:
    return column is not None and column.semantic == "json" and column.pg_type.rsplit(".", 1)[-1] == "hstore"


def _hstore_to_json(column: Column) -> str:
    """hstore's function in the schema that holds the type of ``column`` (an hstore or an array of them): the
    catalog names the type with its schema when that schema is off the search path (``extensions.hstore``), as
    it often is where extensions get a schema of their own."""
    qualified = column.pg_type.removesuffix("[]")
    return f"{qualified.rsplit('.', 1)[0]}.hstore_to_json" if "." in qualified else "hstore_to_json"


def _holds_documents(column: Column) -> bool:
    return column.semantic == "array" and column.items is not None and column.items.semantic == "json"


# How to select a column so the driver returns what :func:`canonical` understands, first match wins: ``{0}`` is the
# column, ``{1}`` hstore's function (:func:`_hstore_to_json`).
_PG_SPELLINGS: tuple[tuple[Callable[[Column], bool], str], ...] = (
    # Debezium sends hstore as a JSON object
    (_is_hstore, "cast({1}({0}) as text)"),
    (lambda c: c.semantic == "json", "{}::text"),
    # the driver returns money as text with a currency symbol
    (lambda c: c.pg_type == "money", "{}::numeric"),
    # arrays of documents as arrays of their texts, which canonical() reads as documents: to_json would read them
    # itself, and a document that is a JSON string or null would then look like text or a NULL element
    (
        lambda c: _holds_documents(c) and _is_hstore(c.items),
        "case when {0} is null then null else (select coalesce(json_agg({1}(e)::text order by n), '[]')"
        " from unnest({0}) with ordinality as u(e, n))::text end",
    ),
    (_holds_documents, "to_json({}::text[])::text"),
    # element types the driver may not know (enums, domains)
    (lambda c: c.semantic == "array", "to_json({})::text"),
    # Debezium sends it normalised to UTC
    (lambda c: c.pg_type.startswith("time with time zone"), _output_of("{0} at time zone 'UTC'")),
    # enums, intervals, inet, ranges, …: the type's output function, which is what Debezium sends (a cast to
    # text differs for some: inet '0.0.0.0' casts to '0.0.0.0/32')
    (lambda c: c.semantic == "string" and not c.pg_type.startswith(_TEXT_TYPES), _output_of("{0}")),
)


# PostgreSQL keeps an array's lower bound ('[0:2]={1,2,3}'), which Debezium does not send: an array starting
# elsewhere than 1 is read as PostgreSQL's text of it (a JSON string), which no list in silver equals, so the row
# is reported.
_FROM_ONE = "case when array_lower({0}, 1) <> 1 then to_json({0}::text)::text else {1} end"


def _pg_expression(column: Column) -> str:
    name = quote_name(column.name)
    spelling = next((template for applies, template in _PG_SPELLINGS if applies(column)), "{0}")
    expression = spelling.format(name, _hstore_to_json(column))
    return _FROM_ONE.format(name, expression) if column.semantic == "array" else expression


# Values spelled as Debezium spells them: zoned values (ranges of timestamptz) in UTC, intervals in ISO 8601.
_SESSION = "-c TimeZone=UTC -c IntervalStyle=iso_8601"


class _OrText(Loader):
    """The driver's own loader of a date, timestamp or time, but a value Python cannot hold (``infinity``, a year
    beyond 9999 or BC, the time ``24:00:00``) comes back as PostgreSQL's text instead of failing the whole read: the
    writer refuses such a value, so the row is reported as differing or missing rather than verify stopping."""

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        own = psycopg.adapters.get_loader(oid, Format.TEXT)
        assert own is not None
        self._own = own(oid, context)

    def load(self, data: Any) -> Any:
        try:
            return self._own.load(data)
        except psycopg.DataError:
            return bytes(data).decode()


_OUT_OF_PYTHON = ("date", "timestamp", "timestamptz", "time")


class PostgresSource:
    """The captured tables, in one REPEATABLE READ snapshot per table."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._relations: dict[str, str] = {}

    @property
    def dsn(self) -> str:
        return self._dsn

    @property
    def database(self) -> str:
        return str(psycopg.conninfo.conninfo_to_dict(self._dsn).get("dbname", ""))

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = psycopg.connect(self._dsn, options=_SESSION)
        for name in _OUT_OF_PYTHON:
            conn.adapters.register_loader(name, _OrText)
        return conn

    def exists(self, contract: TableContract) -> bool:
        return self.columns(contract) is not None

    def columns(self, contract: TableContract) -> frozenset[str] | None:
        with self._connect() as conn:
            found = conn.execute(
                "select to_regclass(%(t)s) is not null, array(select attname::text from pg_attribute"
                " where attrelid = to_regclass(%(t)s) and attnum > 0 and not attisdropped)",
                {"t": _table(contract)},
            ).fetchone()
        return frozenset(found[1]) if found and found[0] else None

    def _own_rows(self, conn: psycopg.Connection[tuple[Any, ...]], contract: TableContract) -> str:
        """What to select the table's rows from: ``ONLY`` a plain table, whose children by inheritance have topics,
        contracts and silver tables of their own (PostgreSQL publishes a child's changes as the child's), while
        a partitioned table's rows are its partitions' (published through it)."""
        table = _table(contract)
        if table not in self._relations:
            found = conn.execute("select relkind::text from pg_class where oid = to_regclass(%s)", (table,)).fetchone()
            self._relations[table] = f"only {table}" if found and found[0] == "r" else table
        return self._relations[table]

    def _select(self, conn: psycopg.Connection[tuple[Any, ...]], contract: TableContract) -> str:
        columns = ", ".join(_pg_expression(c) for c in contract.columns)
        return f"select {columns} from {self._own_rows(conn, contract)}"  # noqa: S608

    def rows(self, contract: TableContract) -> Iterator[Sequence[Any]]:
        with self._connect() as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            select = self._select(conn, contract)
            with conn.cursor(name="cdcflow_verify") as cursor:
                cursor.itersize = _BATCH
                cursor.execute(select.encode())
                for row in cursor:
                    yield _decode_arrays(contract, row)
            conn.rollback()

    def published(self, publication: str) -> dict[str, bool]:
        """``schema.table`` of every table in the publication, and whether it holds any row."""
        holds_rows: dict[str, bool] = {}
        with self._connect() as conn:
            tables = conn.execute(
                "select schemaname, tablename from pg_publication_tables where pubname = %s", (publication,)
            ).fetchall()
            for schema, table in tables:
                query = sql.SQL("select exists (select from {}.{})").format(
                    sql.Identifier(str(schema)), sql.Identifier(str(table))
                )
                holds_rows[f"{schema}.{table}"] = conn.execute(query).fetchone() == (True,)
        return holds_rows

    def row(self, contract: TableContract, key: Sequence[Any]) -> Sequence[Any] | None:
        where = " and ".join(f"{quote_name(k)} = %s" for k in contract.primary_key)
        with self._connect() as conn:
            found = conn.execute(f"{self._select(conn, contract)} where {where}".encode(), list(key)).fetchone()
        return _decode_arrays(contract, found) if found is not None else None

    def keys(self, contract: TableContract) -> set[Key]:
        """Every row's primary key, canonical (as :func:`compare_table` keys rows), in one snapshot."""
        columns = key_columns(contract)
        found: set[Key] = set()
        with self._connect() as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            spelled = ", ".join(_pg_expression(c) for c in columns)
            select = f"select {spelled} from {self._own_rows(conn, contract)}"  # noqa: S608
            with conn.cursor(name="cdcflow_keys") as cursor:
                cursor.itersize = _BATCH
                cursor.execute(select.encode())
                found.update(canonical_key(columns, row) for row in cursor)
            conn.rollback()
        return found

    @contextlib.contextmanager
    def locked(self, contract: TableContract, *, lock_timeout_s: float = 30.0) -> Iterator[LockedTable]:
        """The table under a SHARE lock, in a transaction of its own: its writers wait (and the transactions
        that wrote to it before have ended, committed and visible), its readers do not."""
        with self._connect() as conn:
            conn.execute(f"set local lock_timeout = '{int(lock_timeout_s * 1000)}ms'".encode())
            conn.execute(f"lock table {_table(contract)} in share mode".encode())
            yield LockedTable(conn, contract, self._own_rows(conn, contract))
            conn.rollback()


def _table(contract: TableContract) -> str:
    return f"{quote_name(contract.schema)}.{quote_name(contract.table)}"


def key_columns(contract: TableContract) -> tuple[Column, ...]:
    return tuple(contract.column(k) for k in contract.primary_key)


def canonical_key(columns: Sequence[Column], values: Sequence[Any]) -> Key:
    return tuple(canonical(c, v) for c, v in zip(columns, values, strict=True))


class LockedTable:
    """A source table held by :meth:`PostgresSource.locked`."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], contract: TableContract, relation: str) -> None:
        self._conn, self._contract, self._relation = conn, contract, relation

    def present(self, keys: Sequence[Sequence[Any]]) -> set[Key]:
        """Which of ``keys`` (raw values, silver's) the table holds, canonical."""
        columns = key_columns(self._contract)
        spelled = ", ".join(_pg_expression(c) for c in columns)
        names = ", ".join(quote_name(c.name) for c in columns)
        # silver holds money as a decimal, and PostgreSQL has no money = numeric operator (the value is cast,
        # not the column, so the lookup keeps the primary key's index)
        row = ", ".join("%s::numeric::money" if c.pg_type == "money" else "%s" for c in columns)
        found: set[Key] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = ", ".join(f"({row})" for _ in chunk)
            query = f"select {spelled} from {self._relation} where ({names}) in ({rows})"  # noqa: S608
            params = [v for key in chunk for v in key]
            found.update(canonical_key(columns, row) for row in self._conn.execute(query.encode(), params))
        return found

    def position(self) -> tuple[int, dt.datetime]:
        """The LSN just below the WAL's insert position, and the time now. A change's LSN is where its WAL record
        starts: every change of the table made before the lock was taken starts below it (a record is at least
        24 bytes), and one made after the lock is let go starts at the insert position or later — exactly there
        when it is the very next record, as an insert that waited for the lock can be."""
        row = self._conn.execute("select pg_current_wal_insert_lsn() - '0/0'::pg_lsn, clock_timestamp()").fetchone()
        assert row is not None
        return int(row[0]) - 1, row[1]


def _decode_arrays(contract: TableContract, row: Sequence[Any]) -> Sequence[Any]:
    """Arrays were selected as JSON text (see :func:`_pg_expression`)."""
    if not any(c.semantic == "array" for c in contract.columns):
        return row
    return [
        json.loads(v, parse_float=Decimal) if c.semantic == "array" and isinstance(v, str) else v
        for c, v in zip(contract.columns, row, strict=True)
    ]


# --- silver in DuckDB ----------------------------------------------------------------------------


class DuckDBSilver:
    """``silver.<table>`` in the DuckDB warehouse, read only; waits while the loader holds the file."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 60.0) -> None:
        self._path = path
        self._busy_timeout_s = busy_timeout_s

    @contextlib.contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                conn = duckdb.connect(str(self._path), read_only=True)
                break
            except duckdb.IOException as exc:
                if time.monotonic() >= deadline:
                    raise VerifyError(f"{self._path} stayed locked: {exc}") from None
                time.sleep(0.5)
        try:
            yield conn
        finally:
            conn.close()

    def exists(self, contract: TableContract) -> bool:
        with self._connect() as conn:
            found = conn.execute(
                "select count(*) from information_schema.tables where table_schema = 'silver' and table_name = ?",
                [model_name(contract)],
            ).fetchone()
        return bool(found and found[0])

    def _select(self, contract: TableContract) -> str:
        columns = ", ".join(quote_name(c.name) for c in contract.columns)
        return f"select {columns} from silver.{quote_name(model_name(contract))}"  # noqa: S608

    def rows(self, contract: TableContract) -> Iterator[Sequence[Any]]:
        with self._connect() as conn:
            cursor = conn.execute(self._select(contract))
            while batch := cursor.fetchmany(_BATCH):
                yield from batch

    def row(self, contract: TableContract, key: Sequence[Any]) -> Sequence[Any] | None:
        where = " and ".join(f"{quote_name(k)} = ?" for k in contract.primary_key)
        with self._connect() as conn:
            return conn.execute(f"{self._select(contract)} where {where}", list(key)).fetchone()

    def keys(self, contract: TableContract) -> Iterator[tuple[tuple[Any, ...], int]]:
        """Every live row's primary key (raw values) and the topic partition of its newest version."""
        names = ", ".join(quote_name(k) for k in contract.primary_key)
        with self._connect() as conn:
            query = f"select {names}, _kafka_partition from silver.{quote_name(model_name(contract))}"  # noqa: S608
            cursor = conn.execute(query)
            while batch := cursor.fetchmany(_BATCH):
                for row in batch:
                    yield tuple(row[:-1]), int(row[-1])


def open_silver(settings: Settings) -> SilverReader:
    """Silver in the configured warehouse: the DuckDB file, or the BigQuery project's ``silver`` dataset."""
    if settings.warehouse.backend == "duckdb":
        return DuckDBSilver(settings.duckdb_path(), busy_timeout_s=settings.transform.busy_timeout_s)
    from services.transform.bigquery_silver import BigQuerySilver
    from services.warehouse.bigquery import bigquery_client

    return BigQuerySilver(bigquery_client(settings.warehouse), timeout_s=settings.warehouse.bigquery_job_timeout_s)


# --- the comparison ------------------------------------------------------------------------------


def _canonical_row(contract: TableContract, row: Sequence[Any]) -> list[str]:
    return [canonical(c, v) for c, v in zip(contract.columns, row, strict=True)]


def _key_positions(contract: TableContract) -> list[int]:
    names = [c.name for c in contract.columns]
    return [names.index(k) for k in contract.primary_key]


def compare_table(contract: TableContract, source: SourceReader, silver: RowReader, limit: int = 10) -> TableComparison:
    """Compare one table, on the columns PostgreSQL still has; up to ``limit`` keys of each kind of difference
    are described."""
    result = TableComparison(contract.full_name, f"silver.{model_name(contract)}", not_compared=contract.uncaptured)
    present = source.columns(contract)
    if present is None:
        result.skipped = "the source table does not exist (dropped?)"
        return result
    uncaptured = {name for name, _ in contract.uncaptured}  # a column excluded later is still in the lake
    gone = [c.name for c in contract.columns if c.name not in present and c.name not in uncaptured]
    result.not_compared += tuple((name, _gone(contract, name)) for name in gone)
    if set(gone) & set(contract.primary_key):
        result.error = f"primary key column(s) {sorted(set(gone) & set(contract.primary_key))} are not in PostgreSQL"
        return result
    if not silver.exists(contract):
        result.error = f"{result.silver} does not exist (has `cdcflow transform` run?)"
        return result
    compared = tuple(c for c in contract.columns if c.name in present and c.name not in uncaptured)
    contract = replace(contract, columns=compared, dropped=())
    positions = _key_positions(contract)
    expected: dict[Key, bytes] = {}
    for row in source.rows(contract):
        values = _canonical_row(contract, row)
        expected[tuple(values[i] for i in positions)] = row_digest(values)
    result.source_rows = len(expected)
    extra: list[Key] = []
    differing: list[tuple[Key, Sequence[Any]]] = []
    for row in silver.rows(contract):
        result.silver_rows += 1
        values = _canonical_row(contract, row)
        key = tuple(values[i] for i in positions)
        digest = expected.pop(key, None)
        if digest is None:
            result.extra += 1
            if len(extra) < limit:
                extra.append(key)
        elif digest != row_digest(values):
            result.different += 1
            if len(differing) < limit:
                differing.append((key, [row[i] for i in positions]))
    result.missing = len(expected)
    result.first = [
        *(RowDifference(key, "missing") for key in list(expected)[:limit]),
        *(RowDifference(key, "extra") for key in extra),
        *(
            RowDifference(key, "different", _differing_columns(contract, source, silver, raw_key))
            for key, raw_key in differing
        ),
    ]
    return result


def _gone(contract: TableContract, column: str) -> str:
    """Why a column of the contract that PostgreSQL no longer has is not compared."""
    if column in contract.dropped:
        return "dropped in PostgreSQL: silver keeps it, NULL in the versions written after the drop"
    return (
        f"not in PostgreSQL: dropped after contract version {contract.version}? `cdcflow schemas generate` "
        "records the drop"
    )


def _differing_columns(
    contract: TableContract, source: RowReader, silver: RowReader, raw_key: Sequence[Any]
) -> tuple[str, ...]:
    theirs, ours = source.row(contract, raw_key), silver.row(contract, raw_key)
    if theirs is None or ours is None:
        return ()
    left, right = _canonical_row(contract, theirs), _canonical_row(contract, ours)
    return tuple(c.name for c, a, b in zip(contract.columns, left, right, strict=True) if a != b)


def verify(
    contracts: Sequence[TableContract], source: SourceReader, silver: RowReader, *, limit: int = 10
) -> VerifyReport:
    """Compare every captured table of ``contracts``. A table a cdcflow service produces (``produced_by``, e.g.
    the enricher's) has no source table and is left out; dbt's silver-matches-bronze test covers its silver."""
    report = VerifyReport()
    why = left_out(contracts)
    for contract in sorted((c for c in contracts if not c.produced_by), key=lambda c: c.full_name):
        if contract.full_name in why:  # the transform builds no silver for it: none of its rows reached silver
            silver_name = f"silver.{model_name(contract)}"
            error = f"left out of silver: {why[contract.full_name]}"
            report.tables.append(TableComparison(contract.full_name, silver_name, error=error))
            continue
        report.tables.append(compare_table(contract, source, silver, limit))
    return report


# --- against the configured stack and warehouse -------------------------------------------------------


def verify_contracts(settings: Settings) -> list[TableContract]:
    """The repository's contracts, superseded by the versions the writers published in the lake."""
    lake = open_lake(settings.lake, settings.lake_root())
    try:
        return list(
            ContractRegistry.of([*load_contracts(settings.transform.contracts_dir), *contracts_from_lake(lake)])
        )
    finally:
        lake.close()


def verify_warehouse(
    settings: Settings, contracts: Sequence[TableContract], *, limit: int = 10, every_captured: bool = True
) -> VerifyReport:
    """Compare the configured PostgreSQL database with silver in the configured warehouse.

    With ``every_captured``, a table the connector's publication captures but no contract describes is
    reported too: drift when it holds rows (none of them reached silver), skipped when it is empty.
    """
    silver = open_silver(settings)
    primary = PostgresSource(settings.postgres.dsn())
    others = {s.source: s for s in sources(settings) if s.source}
    report = VerifyReport()
    for name in sorted({c.source for c in contracts}):
        of_source = [c for c in contracts if c.source == name]
        if name and name not in others:
            report.tables += [_no_connector(c) for c in of_source]
            continue
        database = PostgresSource(others[name].dsn()) if name else primary
        report.tables += verify(of_source, database, silver, limit=limit).tables
    if every_captured:
        contracted = {c.full_name for c in contracts}
        report.tables += _uncontracted(settings, primary, "", contracted)
        for name, source in others.items():
            report.tables += _uncontracted(settings, PostgresSource(source.dsn()), name, contracted)
    report.tables.sort(key=lambda t: t.table)
    return report


def _no_connector(contract: TableContract) -> TableComparison:
    result = TableComparison(contract.full_name, f"silver.{model_name(contract)}", not_compared=contract.uncaptured)
    result.skipped = (
        f"no connector file in connect/connectors/ has topic prefix {contract.source!r}: its database is unknown"
    )
    return result


def _uncontracted(
    settings: Settings, database: PostgresSource, source: str, contracted: set[str]
) -> list[TableComparison]:
    """The tables a source captures that no contract describes, each as a comparison that says why it was not
    compared (``source``: ``""`` for the primary one)."""
    if source:
        connector, config = next((s.connector, s.config) for s in sources(settings) if s.source == source)
    else:
        connector = settings.connect.connector
        config = load_connector(settings.stack.connect_dir, connector)
    publication = resolve_env(config.get("publication.name", ""), settings.connector_env())
    excluded = set(settings.writer.exclude_tables)
    found = []
    for qualified, has_rows in sorted(database.published(publication).items()):
        table = f"{source}/{qualified}" if source else qualified
        if table in contracted or qualified in excluded:
            continue
        result = TableComparison(table, "-")
        if has_rows:
            result.error = f"captured by publication {publication} but no contract: none of its rows reached silver"
        else:
            result.skipped = "captured but empty: no change of it has been seen yet"
        found.append(result)
    for qualified in unpublished_tables(database.dsn, {**config, "publication.name": publication}, exclude=excluded):
        result = TableComparison(f"{source}/{qualified}" if source else qualified, "-")
        add_table = f"cdcflow source add-table {qualified}" + (f" --source {connector}" if source else "")
        result.error = (
            f"connector {connector} takes it, but publication {publication} lacks it (created, or dropped and "
            f"created again, after the connector started): none of its changes are captured; `{add_table}` "
            "publishes it and backfills its rows"
        )
        found.append(result)
    return found


def print_report(report: VerifyReport, console: Console) -> None:
    """One row per table, then the first differing keys, then the verdict."""
    summary = Table("table", "silver", "source rows", "silver rows", "missing", "extra", "different", "result")
    for result in report.tables:
        if result.skipped:
            verdict = f"[yellow]skipped[/]: {result.skipped}"
        elif result.error:
            verdict = f"[red]DRIFT[/]: {result.error}"
        else:
            verdict = "[red]DRIFT[/]" if result.drift else "[green]equal[/]"
        summary.add_row(
            result.table,
            result.silver,
            f"{result.source_rows:,}",
            f"{result.silver_rows:,}",
            str(result.missing),
            str(result.extra),
            str(result.different),
            verdict,
        )
    console.print(summary)
    for result in report.tables:
        for difference in result.first:
            console.print(f"  {result.table}: {difference}")
        for column, why in result.not_compared:
            console.print(f"  {result.table}: not compared: {column} — {why}")
    if report.drift:
        console.print("[red]drift[/]: silver does not equal the source")
    else:
        console.print(f"[green]no drift[/]: {len(report.tables)} table(s) equal their source")
