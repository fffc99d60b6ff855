"""Columns named like the columns cdcflow adds: kept where they can be, refused with why where they cannot.

Real schemas name columns ``valid_from``, ``valid_to`` and ``is_current`` (a price list's own validity), key a
log by ``lsn``, and mix case (``"Price"``). Silver's history names its period with those very names, so a
table holding them broke its history model (two columns of one name). Now such a table keeps its columns and
its history's period is ``_valid_from``, ``_valid_to`` and ``_is_current``; silver equals PostgreSQL row by row.

A column named like one of the lake's or bronze's own (``_op``) cannot be held as it stands: the catalog
refuses the table, its changes go to the DLQ saying why, and excluding the column (or renaming it) is the
remedy. (Two column names that differ only in case never get that far: Debezium fails the connector's task on
such a table, so ``source add-table`` refuses it — tests/e2e/test_keyless_tables.py.)

A table named like another's history (``n_prices_history`` created beside ``n_prices``) cannot take its silver
name. It used to stop the transform — silver of every table — from the moment the writer discovered it; now it
alone is left out, each run says so, and every other table's silver goes on.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import psycopg
import pytest

from services.common.signals import Shutdown
from services.loader.wiring import run_loader
from services.transform.wiring import run_transform
from tests.fixtures.cli import cdcflow, wait_backfills_completed
from tests.fixtures.pipeline import WriterProcess, dlq_messages, header_dict
from tests.fixtures.source import IsolatedSource
from tests.fixtures.transform import describe, drain

PRICES = "lending.n_prices"
SCHEMA_SQL = """
create table lending.n_prices (
    lsn        bigint primary key,
    valid_from date not null,
    "Valid_To" date,
    is_current boolean,
    "Price"    numeric(10, 2),
    hour       integer,
    dt         date
);
insert into lending.n_prices
select g, date '2025-01-01' + g, null, true, g * 1.5, g % 24, date '2025-06-01' from generate_series(1, 30) g;

create table lending.n_marked (id integer primary key, _op text);
insert into lending.n_marked values (1, 'mine');
"""
CHANGES_SQL = """
update lending.n_prices set "Valid_To" = valid_from + 30, is_current = false where lsn <= 10;
insert into lending.n_prices
select g, date '2025-03-01', null, true, g * 2.0, g % 24, null from generate_series(1, 10) g
  on conflict (lsn) do update set "Price" = excluded."Price", is_current = true, "Valid_To" = null;
delete from lending.n_prices where lsn between 25 and 27;
insert into lending.n_marked values (2, 'streamed');
"""
COLUMNS = 'lsn, valid_from, "Valid_To", is_current, "Price", hour, dt'


@pytest.mark.parametrize("isolated_source", [SCHEMA_SQL], indirect=True)
def test_columns_named_like_a_historys_period_are_kept_and_names_cdcflow_adds_are_refused(
    isolated_source: IsolatedSource, writer: WriterProcess, tmp_path: Path
) -> None:
    source = isolated_source.settings
    pipeline = isolated_source.pipeline(writer, tmp_path, lambda c: c.qualified_name == PRICES)
    configured = pipeline.settings

    with isolated_source.writing(writer) as pg:
        pg.execute(CHANGES_SQL.encode())

    report, _ = pipeline.settle([PRICES])
    assert not report.drift, describe(report)
    assert [(t.source_rows, t.silver_rows) for t in report.tables] == [(27, 27)]

    with (
        psycopg.connect(source.postgres.dsn()) as pg,
        duckdb.connect(str(configured.duckdb_path()), read_only=True) as db,
    ):
        expected = pg.execute(f"select {COLUMNS} from {PRICES} order by lsn".encode()).fetchall()
        assert db.execute(f"select {COLUMNS} from silver.n_prices order by lsn").fetchall() == expected
        # the history keeps the table's own period beside its own: key 1 has its snapshot read, then two updates
        history = db.execute(
            "select is_current, _is_current, _valid_from, _valid_to"
            " from silver.n_prices_history where lsn = 1 order by _source_lsn, _kafka_offset"
        ).fetchall()
        assert [(own, current) for own, current, _, _ in history] == [(True, False), (False, False), (True, True)]
        periods = [(start, end) for _, _, start, end in history]
        assert [end for _, end in periods] == [start for start, _ in periods[1:]] + [None]  # each ends the last
        assert db.execute("select count(*) from silver.n_prices_history where _is_current").fetchone() == (27,)

    dead = [{k: (v or b"").decode() for k, v in header_dict(m).items()} for m in dlq_messages(source, writer.group)]
    assert [d["cdcflow.source.topic"].rsplit(".", 1)[1] for d in dead] == ["n_marked"] * 2
    assert all("lending.n_marked.'_op': cdcflow adds a column of that name" in d["cdcflow.error.message"] for d in dead)

    # a table named like n_prices' history, captured later: left out of silver, and n_prices' silver goes on
    with isolated_source.writing(writer) as pg:
        pg.execute(b"create table lending.n_prices_history (id integer primary key, note text)")
        pg.execute(b"insert into lending.n_prices_history values (1, 'audit')")
        assert "lending.n_prices_history added to publication" in cdcflow(
            isolated_source.cli_env(), "source", "add-table", "lending.n_prices_history"
        )
        wait_backfills_completed(isolated_source.cli_env(), 1)
        pg.execute(b'update lending.n_prices set "Price" = 99 where lsn = 2')
    drain(source, writer, [PRICES, "lending.n_prices_history"])
    assert run_loader(configured, Shutdown(), once=True) == 0
    assert run_transform(configured, Shutdown(), once=True) == 1  # a run that leaves a table out is no success
    with duckdb.connect(str(configured.duckdb_path()), read_only=True) as db:
        assert db.execute('select "Price" from silver.n_prices where lsn = 2').fetchone() == (99,)
        assert db.execute("select id, note from bronze.lending__n_prices_history").fetchall() == [(1, "audit")]
        assert db.execute("select count(*) from silver.n_prices_history where lsn = 2").fetchone() == (4,)
