"""Tables in an inheritance tree (``CREATE TABLE … INHERITS``, the partitioning of older schemas) land as
themselves: the parent holds its own rows, each child its own, zero drift.

A query of a parent reads its children's rows too, while PostgreSQL publishes a change of a child's row as the
child's. Debezium's initial snapshot, ``SELECT * FROM`` the parent, sent every child row as the parent's as
well, where no later change of it ever arrived: silver's parent held stale copies of the children's rows, and
verify, reading the parent the same way, compared the wrong rows. Now the connector's snapshot reads ``ONLY``
the parent (`cdcflow source add` sets it, as the fixture does), a backfill of the parent reads its own rows
alone, and verify compares each table's own rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import httpx
import psycopg
import pytest

from tests.fixtures.cli import cdcflow, wait_backfills_completed
from tests.fixtures.pipeline import WriterProcess, dlq_messages
from tests.fixtures.source import IsolatedSource
from tests.fixtures.transform import describe

TABLES = ["lending.i_events", "lending.i_events_2025", "lending.i_events_2026"]
SCHEMA_SQL = """
create table lending.i_events (id bigint primary key, kind text not null, at timestamptz);
create table lending.i_events_2025 (note text) inherits (lending.i_events);
alter table lending.i_events_2025 add primary key (id);
create table lending.i_events_2026 () inherits (lending.i_events);
alter table lending.i_events_2026 add primary key (id);
insert into lending.i_events select g, 'parent', timestamptz '2024-06-01 00:00+00' + g * interval '1 d'
  from generate_series(1, 10) g;
insert into lending.i_events_2025 select g, 'y2025', timestamptz '2025-01-01 00:00+00' + g * interval '1 h', 'n' || g
  from generate_series(101, 120) g;
insert into lending.i_events_2026 select g, 'y2026', timestamptz '2026-01-01 00:00+00' + g * interval '1 h'
  from generate_series(201, 215) g;
"""
CHANGES_SQL = """
update lending.i_events set kind = kind || '!' where id % 2 = 0;
delete from lending.i_events where id in (3, 103, 203);
insert into lending.i_events_2026 values (216, 'late', now());
insert into lending.i_events values (11, 'parent', now());
"""


@pytest.mark.parametrize("isolated_source", [SCHEMA_SQL], indirect=True)
def test_an_inheritance_tree_lands_table_by_table_with_zero_drift(
    isolated_source: IsolatedSource, writer: WriterProcess, tmp_path: Path
) -> None:
    source = isolated_source.settings
    pipeline = isolated_source.pipeline(writer, tmp_path, lambda c: c.qualified_name in TABLES)
    cli_env = isolated_source.cli_env()

    with isolated_source.writing(writer) as pg:
        pg.execute(CHANGES_SQL.encode())

    report, _ = pipeline.settle(TABLES)
    assert not report.drift, describe(report)
    counts = {t.table: (t.source_rows, t.silver_rows) for t in report.tables}
    assert counts == {
        "lending.i_events": (10, 10),  # its own rows: 1-11 but 3
        "lending.i_events_2025": (19, 19),
        "lending.i_events_2026": (15, 15),
    }
    assert dlq_messages(source, writer.group) == []

    with (
        psycopg.connect(source.postgres.dsn()) as pg,
        duckdb.connect(str(pipeline.settings.duckdb_path()), read_only=True) as db,
    ):
        for table in TABLES:
            expected = pg.execute(f'select id, kind, "at" from only {table} order by id'.encode()).fetchall()
            silver = f"silver.{table.split('.', 1)[1]}"
            assert db.execute(f'select id, kind, "at" from {silver} order by id').fetchall() == expected, table

    # a backfill of the parent reads its own rows alone, and changes nothing in silver
    cdcflow(cli_env, "backfill", "start", "lending.i_events")
    [snapshot] = wait_backfills_completed(cli_env, 1)
    assert snapshot["rows"] == {"lending.i_events": 10}
    isolated_source.run_writer(writer)
    report, _ = pipeline.settle(TABLES)
    assert not report.drift, describe(report)
    assert {t.table: t.silver_rows for t in report.tables}["lending.i_events"] == 10


def test_a_parent_added_later_is_snapshot_as_its_own_rows(
    isolated_source: IsolatedSource, writer: WriterProcess, tmp_path: Path
) -> None:
    source = isolated_source.settings
    pipeline = isolated_source.pipeline(writer, tmp_path, lambda c: c.qualified_name == "lending.i_events")
    cli_env = isolated_source.cli_env()
    with psycopg.connect(source.postgres.dsn(), autocommit=True) as pg:
        pg.execute(SCHEMA_SQL.encode())  # after the connector started: in no publication yet

    added = cdcflow(cli_env, "source", "add-table", "lending.i_events")
    assert "snapshots read ONLY lending.i_events" in added
    connector = source.connect.connector
    config = httpx.get(f"{source.connect.url}/connectors/{connector}/config", timeout=30).json()
    assert config["snapshot.select.statement.overrides.lending.i_events"] == 'SELECT * FROM ONLY "lending"."i_events"'
    [snapshot] = wait_backfills_completed(cli_env, 1)
    assert snapshot["rows"] == {"lending.i_events": 10}  # its own rows, not its children's 35

    isolated_source.run_writer(writer)
    report, _ = pipeline.settle(["lending.i_events"])
    assert not report.drift, describe(report)
    assert [(t.table, t.source_rows, t.silver_rows) for t in report.tables] == [("lending.i_events", 10, 10)]


@pytest.mark.parametrize("isolated_source", [SCHEMA_SQL], indirect=True)
def test_source_add_sets_the_snapshot_of_a_parent_to_its_own_rows(
    isolated_source: IsolatedSource, tmp_path: Path
) -> None:
    env, dsn = isolated_source.source_add_env(tmp_path)
    cdcflow(env, "source", "add", "inherited", "--dsn", dsn, "--no-register")
    written = Path(env["CDCFLOW_STACK__CONNECT_DIR"]) / "connectors" / "inherited.json"
    config = json.loads(written.read_text())["config"]
    assert config["snapshot.select.statement.overrides"] == "lending.i_events"  # the parent alone has children
    assert config["snapshot.select.statement.overrides.lending.i_events"] == 'SELECT * FROM ONLY "lending"."i_events"'
