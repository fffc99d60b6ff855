"""Columns dropped in PostgreSQL, one of them NOT NULL, and a column added after: nothing stops, nothing drifts.

A table of the test's own is captured (snapshot, then streamed changes) and reaches silver; then two of its
columns are dropped while the writer runs, rows are updated, inserted and deleted, a new column is added and
set. Before, the writer refused the added column (the contract had "lost" two columns, an incompatible
change), so every later change of the table went to the DLQ; and verify died on the first column PostgreSQL
no longer had. Now the writer's next contract version keeps the dropped columns, marked, and adds the new
one; nothing goes to the DLQ; `cdcflow verify` compares the columns PostgreSQL has, names the dropped ones,
and finds zero drift; silver keeps the dropped columns' values where no change came after the drop.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.fixtures.cli import cdcflow
from tests.fixtures.pipeline import WriterProcess, dlq_messages
from tests.fixtures.source import AvroSource, IsolatedSource
from tests.fixtures.transform import describe

TABLE = "lending.d_accounts"
SCHEMA_SQL = """
create table lending.d_accounts (
    id        bigint primary key,
    region    text not null,
    note      text,
    score     integer not null,
    opened_on date
);
insert into lending.d_accounts
select g, 'r' || g, 'note ' || g, g * 10, date '2026-01-01' + g from generate_series(1, 30) g;
"""
CHANGES_SQL = """
alter table lending.d_accounts drop column note, drop column score;
update lending.d_accounts set region = region || '!' where id % 2 = 0;
insert into lending.d_accounts (id, region, opened_on) select g, 'new ' || g, null from generate_series(31, 40) g;
delete from lending.d_accounts where id % 5 = 0;
alter table lending.d_accounts add column segment text;
update lending.d_accounts set segment = 'S' || id where id % 3 = 0;
"""


@pytest.mark.parametrize("isolated_source", [SCHEMA_SQL, AvroSource(SCHEMA_SQL)], indirect=True, ids=["json", "avro"])
def test_dropped_columns_are_kept_and_a_column_added_after_still_flows(
    isolated_source: IsolatedSource, writer: WriterProcess, tmp_path: Path
) -> None:
    source = isolated_source.settings
    pipeline = isolated_source.pipeline(writer, tmp_path, lambda c: c.qualified_name == TABLE)  # newest version

    isolated_source.run_writer(writer)
    pipeline.run([TABLE])  # silver holds the table before the drop

    with isolated_source.writing(writer) as pg:
        pg.execute(CHANGES_SQL.encode())

    report, _ = pipeline.settle([TABLE])
    assert not report.drift, describe(report)
    [table] = report.tables
    assert table.source_rows == table.silver_rows == 32
    assert sorted(column for column, _ in table.not_compared) == ["note", "score"]
    assert dlq_messages(source, writer.group) == []  # the added column was not refused

    [contract] = pipeline.contracts()
    assert (contract.version, contract.dropped) == (2, ("note", "score"))
    assert [c.name for c in contract.columns] == ["id", "region", "note", "score", "opened_on", "segment"]

    shown = cdcflow(isolated_source.cli_env() | pipeline.env, "verify", "--table", TABLE)
    assert "no drift" in shown
    assert "not compared: note — dropped in PostgreSQL" in shown

    # silver read without cdcflow's code: values from before the drop stay where no change came after it
    with duckdb.connect(str(pipeline.settings.duckdb_path()), read_only=True) as db:
        rows = {
            r[0]: r[1:] for r in db.execute("select id, region, note, score, segment from silver.d_accounts").fetchall()
        }
        history = db.execute("select note, score from silver.d_accounts_history where id = 2 order by valid_from")
        versions = history.fetchall()
    assert rows[1] == ("r1", "note 1", 10, None)  # untouched since the drop
    assert rows[2] == ("r2!", None, None, None)  # updated after it
    assert rows[3] == ("r3", None, None, "S3")  # set after it: the event no longer carries note or score
    assert rows[31] == ("new 31", None, None, None)
    assert 5 not in rows
    assert versions == [("note 2", 20), (None, None)]
