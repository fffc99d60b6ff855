"""The warehouse equals the source: workload → writer → loader → ``cdcflow transform`` → ``cdcflow verify``.

The real pipeline slice on the running stack, into a DuckDB file of this test: a seeded workload (inserts,
updates that leave the TOASTed ``customers.notes`` untouched, deletes that cascade), then a customer deleted
and inserted again under the same key, twice — once before the first (full) transform and once before the
second (incremental) one. After each, every silver table equals its PostgreSQL table and ``dbt build``
passed every test.

The stack is shared: another test may write the lending tables while this one runs. Verify compares states,
so such a write is drift until the pipeline has carried it too; ``Pipeline.settle`` (tests/fixtures/transform.py)
drains and compares again (a few times) before calling drift a failure.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from services.common.contracts import TableContract, load_contracts
from services.common.contracts.catalog import table_contract
from services.common.settings import Settings, repo_root
from services.stack.runtime import Stack
from services.stack.workload import Workload
from services.transform.verify import PostgresSource, TableComparison, compare_table, verify_warehouse
from tests.fixtures.pipeline import WriterProcess
from tests.fixtures.source import maintenance
from tests.fixtures.transform import Pipeline, describe, pipeline_env

Conn = psycopg.Connection[tuple[object, ...]]
TABLES = ("customers", "facilities", "transactions")
LENDING = [f"lending.{t}" for t in TABLES]


def _contracts() -> list[TableContract]:
    return [c for c in load_contracts(repo_root() / "schemas") if c.table in TABLES]


def _reinsert_customer(pg: Conn, customer_id: int, status: str) -> None:
    """Delete a customer (its facilities and transactions cascade) and insert it again under the same key."""
    columns = [
        "external_ref",
        "full_name",
        "email",
        "customer_type",
        "date_of_birth",
        "credit_limit",
        "profile",
        "notes",
    ]
    found = pg.execute(
        f"select {', '.join(columns)} from lending.customers where customer_id = %s".encode(), (customer_id,)
    ).fetchone()
    assert found is not None
    values: dict[str, Any] = dict(zip(columns, found, strict=True))
    values["profile"] = json.dumps(values["profile"])
    with pg.transaction():
        pg.execute("delete from lending.customers where customer_id = %s", (customer_id,))
    pg.execute(
        "insert into lending.customers (customer_id, status, external_ref, full_name, email, customer_type,"
        " date_of_birth, credit_limit, profile, notes) values (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)",
        (customer_id, status, *(values[c] for c in columns)),
    )


def _touch_without_notes(pg: Conn, customer_ids: list[int]) -> None:
    """Updates that leave the TOASTed notes alone: Debezium sends them without it."""
    pg.execute(
        "update lending.customers set credit_limit = credit_limit + 1, updated_at = now()"
        " where customer_id = any(%s) and notes is not null",
        (customer_ids,),
    )


def _new_customers(pg: Conn, after: int, count: int) -> list[int]:
    rows = pg.execute(
        "select customer_id from lending.customers where customer_id > %s and notes is not null"
        " order by customer_id limit %s",
        (after, count),
    ).fetchall()
    return [int(str(r[0])) for r in rows]


def _bronze(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def _run_results(work_dir: Path) -> dict[str, str]:
    document = json.loads((work_dir / "target" / "run_results.json").read_text())
    return {r["unique_id"]: r["status"] for r in document["results"]}


def test_silver_equals_postgres_after_full_and_incremental_runs(
    settings: Settings, pg: Conn, writer: WriterProcess, tmp_path: Path
) -> None:
    pipeline = Pipeline(settings, writer, pipeline_env(writer, tmp_path), _contracts)
    warehouse, work_dir = tmp_path / "warehouse.duckdb", tmp_path / "transform"
    first_new = pg.execute("select coalesce(max(customer_id), 0) from lending.customers").fetchone()
    assert first_new is not None
    baseline = int(str(first_new[0]))

    # round 1: a workload, TOAST-untouched updates, a delete and re-insert under the same key
    Workload(settings.postgres, seed=601).run(rate=300, duration_s=3)
    created = _new_customers(pg, baseline, 6)
    assert len(created) >= 4, "the workload created too few customers to exercise TOAST and re-inserts"
    _touch_without_notes(pg, created[:3])
    _reinsert_customer(pg, created[3], "SUSPENDED")
    _touch_without_notes(pg, [created[3]])

    report, runs = pipeline.settle(LENDING)
    assert not report.drift, describe(report)
    assert {t.table for t in report.tables} == {f"lending.{t}" for t in TABLES}
    assert all(t.source_rows == t.silver_rows > 0 for t in report.tables), describe(report)
    results = _run_results(work_dir)
    assert not [u for u, s in results.items() if s in {"fail", "error", "runtime error"}]
    assert any(u.startswith("unit_test.") and s == "pass" for u, s in results.items())

    # the TOAST case really happened: bronze holds versions without notes for the touched customers ...
    ids = ", ".join(str(i) for i in created[:4])
    unavailable = _bronze(
        warehouse,
        f"select count(distinct customer_id) from bronze.lending__customers"
        f" where customer_id in ({ids}) and list_contains(_unavailable_columns, 'notes')",
    )
    assert unavailable[0][0] >= 3
    # ... and the re-inserted key has a delete followed by an insert in bronze
    ops = _bronze(
        warehouse,
        f"select _op from bronze.lending__customers where customer_id = {created[3]}"
        " order by _source_lsn, _kafka_offset",
    )
    assert [o for (o,) in ops][-3:] == ["d", "c", "u"]

    # round 2, incremental: more of the same on top of what silver holds
    Workload(settings.postgres, seed=602).run(rate=300, duration_s=2)
    _touch_without_notes(pg, created[:2])
    _reinsert_customer(pg, created[0], "INACTIVE")
    _touch_without_notes(pg, [created[0]])
    pg.execute("delete from lending.customers where customer_id = %s", (created[1],))

    report, more_runs = pipeline.settle(LENDING)
    assert not report.drift, describe(report)
    executed = (work_dir / "target" / "run" / "cdcflow" / "models" / "silver" / "customers.sql").read_text()
    assert "merge into" in executed.lower(), "the second run was not incremental"
    silver = _bronze(warehouse, f"select customer_id, status from silver.customers where customer_id in ({ids})")
    assert dict(silver)[created[0]] == "INACTIVE"
    assert created[1] not in dict(silver)

    for registry in [*runs, *more_runs]:
        assert registry.get_sample_value("cdcflow_transform_runs_total", {"status": "success"}) == 1
        assert registry.get_sample_value("cdcflow_transform_runs_total", {"status": "failure"}) is None
        assert registry.get_sample_value("cdcflow_dbt_test_failures", {"model": "customers"}) == 0
        assert (registry.get_sample_value("cdcflow_transform_last_success_timestamp_seconds") or 0) > 0


def test_a_captured_table_without_a_contract_is_named_never_skipped_silently(
    settings: Settings, pg: Conn, tmp_path: Path
) -> None:
    """A table in the connector's publication that no contract describes: drift when it has rows (they never
    reached silver), skipped with a reason when it is empty. A table the connector's include list takes but its
    filtered publication lacks (created after the connector started): drift, naming the command that captures
    it; its partitions and tables of other schemas are not named."""
    suffix = uuid.uuid4().hex[:8]
    full, empty, late, parts = (f"verify_{kind}_{suffix}" for kind in ("full", "empty", "late", "parts"))
    pg.execute(f"create table lending.{full} (id int primary key); insert into lending.{full} values (1)".encode())
    pg.execute(f"create table lending.{empty} (id int primary key)".encode())
    pg.execute(f"create table lending.{late} (id int primary key)".encode())
    pg.execute(f"create table lending.{parts} (id int, k int, primary key (id, k)) partition by list (k)".encode())
    pg.execute(f"create table lending.{parts}_1 partition of lending.{parts} for values in (1)".encode())
    pg.execute(f"create table public.{late} (id int primary key)".encode())  # not in the include lists
    pg.execute(f"alter publication cdcflow_lending add table lending.{full}, lending.{empty}, lending.{parts}".encode())
    try:
        configured = settings.model_copy(
            update={"warehouse": settings.warehouse.model_copy(update={"duckdb_path": tmp_path / "wh.duckdb"})}
        )
        duckdb.connect(str(tmp_path / "wh.duckdb")).close()
        report = verify_warehouse(configured, _contracts())
        found = {t.table: t for t in report.tables}
        assert "no contract" in str(found[f"lending.{full}"].error)
        assert found[f"lending.{empty}"].skipped is not None
        assert not found[f"lending.{empty}"].drift
        assert "cdcflow.heartbeat" not in found  # excluded from capture on purpose
        unpublished = found[f"lending.{late}"].error or ""
        assert "publication cdcflow_lending lacks it" in unpublished
        assert f"`cdcflow source add-table lending.{late}`" in unpublished
        assert f"lending.{parts}_1" not in found  # published through its root
        assert f"public.{late}" not in found
        assert report.drift
        assert not verify_warehouse(configured, [], every_captured=False).tables  # --table asks for no more
    finally:
        pg.execute(
            f"drop table lending.{full}, lending.{empty}, lending.{late}, lending.{parts}, public.{late}".encode()
        )


ODD_SQL = """
create table {schema}.odd (
  id integer primary key, at timestamptz, due date, ints integer[], stamps timestamptz[], t time
);
insert into {schema}.odd values
  (1, 'infinity', '10000-01-01', '{{1}}', '{{"2024-01-01 00:00+00",infinity}}', '24:00:00'),
  (2, '2024-01-01 00:00+00', '2024-01-01', '{{{{1,2}},{{3,4}}}}', '{{}}', '00:00:00'),
  (3, '-infinity', '0044-03-15 BC', null, null, null),
  (4, '2024-06-01 12:00+00', '2024-06-01', '{{5,null}}', '{{"2024-06-01 12:00+00"}}', '23:59:59.999999');
"""


class _Silver:
    """A silver table of the given rows, by their first column (the key)."""

    def __init__(self, *rows: tuple[Any, ...]) -> None:
        self.data = {int(row[0]): row for row in rows}

    def exists(self, contract: TableContract) -> bool:
        return True

    def rows(self, contract: TableContract) -> Iterator[Sequence[Any]]:
        yield from self.data.values()

    def row(self, contract: TableContract, key: Sequence[Any]) -> Sequence[Any] | None:
        return self.data.get(int(key[0]))


def _compared(settings: Settings, setup_sql: str, table: str, silver: _Silver) -> TableComparison:
    """verify's comparison of ``silver`` with the ``table`` that ``setup_sql`` makes in a scratch schema (its
    ``{schema}``), dropped afterwards."""
    schema = f"cdcflow_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as pg:
        pg.execute(f"create schema {schema}".encode())
        try:
            pg.execute(setup_sql.format(schema=schema).encode())
            contract = table_contract(settings.postgres.dsn(), f"{schema}.{table}")
            assert contract is not None
            return compare_table(contract, PostgresSource(settings.postgres.dsn()), silver)
        finally:
            pg.execute(f"drop schema {schema} cascade".encode())


def test_values_python_cannot_hold_are_drift_not_a_failed_verify(stack: Stack, settings: Settings) -> None:
    # silver as the pipeline leaves it: the writer refused rows 1 and 3 (values outside years 1-9999; row 1's time,
    # 24:00:00, is no Python time either), and Debezium sent row 2's two-dimensional integers as [null, null]
    at = dt.datetime(2024, 6, 1, 12, tzinfo=dt.UTC)
    kept = _Silver(
        (2, dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.date(2024, 1, 1), [None, None], [], dt.time(0)),
        (4, at, dt.date(2024, 6, 1), [5, None], [at], dt.time(23, 59, 59, 999999)),
    )
    result = _compared(settings, ODD_SQL, "odd", kept)
    assert (result.source_rows, result.silver_rows, result.missing, result.different) == (4, 2, 2, 1)
    assert [(d.problem, d.key) for d in result.first] == [
        ("missing", ("1",)),
        ("missing", ("3",)),
        ("different", ("2",)),
    ]
    assert result.first[2].columns == ("ints",)


DOCUMENTS_SQL = """
create extension if not exists hstore with schema public;
create table {schema}.docs (id integer primary key, js json[], jb jsonb[], hs public.hstore[]);
insert into {schema}.docs values
  (1, array['"x"'::json, 'null', null, '{{"a": [1, 2.50]}}'], array['"y"'::jsonb, 'null'],
   array['a=>1'::public.hstore, null, 'b=>NULL']),
  (2, '{{}}', '{{}}', '{{}}'),
  (3, null, null, null),
  (4, array['"z"'::json], null, null);
"""


def test_arrays_of_documents_compare_as_documents(stack: Stack, settings: Settings) -> None:
    """A document that is a JSON string or null is a document in an array too (it once stopped verify, and a
    'null' document read as a NULL element)."""
    # as Debezium sends them: each document's text, an hstore as a JSON object; row 4 differs
    silver = _Silver(
        (1, ['"x"', "null", None, '{"a":[1,2.50]}'], ['"y"', "null"], ['{"a":"1"}', None, '{"b":null}']),
        (2, [], [], []),
        (3, None, None, None),
        (4, ['"x"'], None, None),
    )
    result = _compared(settings, DOCUMENTS_SQL, "docs", silver)
    assert result.error is None
    assert (result.source_rows, result.silver_rows, result.missing, result.extra, result.different) == (4, 4, 0, 0, 1)
    assert [(d.problem, d.key, d.columns) for d in result.first] == [("different", ("4",), ("js",))]


@contextlib.contextmanager
def _scratch_database(settings: Settings) -> Iterator[Settings]:
    """``settings`` pointed at a database of the test's own, dropped afterwards."""
    name = f"cdcflow_test_{uuid.uuid4().hex[:8]}"
    with maintenance(settings) as pg:
        pg.execute(f"create database {name}".encode())
        try:
            yield settings.model_copy(update={"postgres": settings.postgres.model_copy(update={"database": name})})
        finally:
            pg.execute(f"drop database {name} with (force)".encode())


def test_hstore_in_a_schema_off_the_search_path_is_compared(stack: Stack, settings: Settings) -> None:
    """Where extensions get a schema of their own, the catalog names the type with it (``ext.hstore``) and an
    unqualified hstore_to_json does not resolve: verify stopped with an error instead of comparing."""
    with _scratch_database(settings) as scratch:
        with psycopg.connect(scratch.postgres.dsn(), autocommit=True) as pg:
            pg.execute(b"create schema ext; create extension hstore with schema ext")
        setup = """
        create table {schema}.kv (id integer primary key, h ext.hstore, hs ext.hstore[]);
        insert into {schema}.kv values (1, 'a=>1', array['b=>2'::ext.hstore]), (2, 'a=>NULL', null), (3, null, '{{}}');
        """
        silver = _Silver((1, '{"a":"1"}', ['{"b":"2"}']), (2, '{"a":"2"}', None), (3, None, []))
        result = _compared(scratch, setup, "kv", silver)
    assert result.error is None, result.error
    assert (result.source_rows, result.silver_rows, result.missing, result.extra, result.different) == (3, 3, 0, 0, 1)
    assert [(d.problem, d.key, d.columns) for d in result.first] == [("different", ("2",), ("h",))]


BOUNDS_SQL = """
create table {schema}.bounds (id integer primary key, ints integer[], words text[]);
insert into {schema}.bounds values
  (1, '[0:2]={{1,2,3}}', '{{a,b}}'), (2, '{{1,2,3}}', '[-1:0]={{a,b}}'), (3, '{{}}', null), (4, '[1:1]={{7}}', '{{c}}');
"""


def test_an_array_starting_elsewhere_than_1_is_reported(stack: Stack, settings: Settings) -> None:
    """PostgreSQL keeps an array's lower bound and Debezium does not send it: silver holds the elements alone,
    which verify must not call equal."""
    silver = _Silver((1, [1, 2, 3], ["a", "b"]), (2, [1, 2, 3], ["a", "b"]), (3, [], None), (4, [7], ["c"]))
    result = _compared(settings, BOUNDS_SQL, "bounds", silver)
    assert result.error is None, result.error
    assert (result.source_rows, result.missing, result.extra, result.different) == (4, 0, 0, 2)
    assert [(d.key, d.columns) for d in result.first] == [(("1",), ("ints",)), (("2",), ("words",))]
