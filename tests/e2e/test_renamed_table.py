"""A table renamed or dropped while it is captured: what reaches silver, and the remedy the pipeline names.

PostgreSQL keeps a renamed table in the publication (by its identity, not its name) and sends its changes under
the new name from the rename on, so the pipeline takes ``lending.r_new`` as a new table: a contract, a topic and
a silver table of its own, holding only the rows changed since. ``cdcflow verify`` reports the others missing,
and ``cdcflow backfill start lending.r_new`` copies them; the old name's silver stays as it was at the rename.

Changes of a table read only after the table is gone (dropped, or renamed) cannot be typed from PostgreSQL's
catalog: they go to the DLQ saying so, and naming the remedy for a rename.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.fixtures.cli import cdcflow, wait_backfills_completed
from tests.fixtures.pipeline import WriterProcess, dlq_messages, header_dict, partition_ends, wait_until
from tests.fixtures.source import IsolatedSource
from tests.fixtures.transform import describe

SCHEMA_SQL = """
create table lending.r_old (id integer primary key, note text);
insert into lending.r_old select g, 'snap ' || g from generate_series(1, 10) g;
create table lending.r_gone (id integer primary key);
insert into lending.r_gone select generate_series(1, 3);
"""
RENAMED = ["lending.r_old", "lending.r_new"]


@pytest.mark.parametrize("isolated_source", [SCHEMA_SQL], indirect=True)
def test_a_renamed_table_is_a_new_one_a_backfill_completes_and_a_gone_one_is_named(
    isolated_source: IsolatedSource, writer: WriterProcess, tmp_path: Path
) -> None:
    source = isolated_source.settings
    pipeline = isolated_source.pipeline(writer, tmp_path, lambda c: c.table in ("r_old", "r_new"))

    # r_gone's snapshot reaches Kafka, then the table is dropped before the writer has read a record of it
    gone_topic = f"{source.kafka.topic_prefix}.lending.r_gone"
    wait_until("r_gone's snapshot", lambda: sum(partition_ends(source, [gone_topic]).values()) == 3)
    with isolated_source.writing(writer) as pg:
        pg.execute(b"drop table lending.r_gone")
        pg.execute(b"update lending.r_old set note = 'before rename' where id = 1")
    report, _ = pipeline.settle(["lending.r_old"])
    assert not report.drift, describe(report)
    dead = [{k: (v or b"").decode() for k, v in header_dict(m).items()} for m in dlq_messages(source, writer.group)]
    assert [(d["cdcflow.source.topic"], d["cdcflow.error.reason"]) for d in dead] == [(gone_topic, "unknown_table")] * 3
    assert all(
        "no contract for table lending.r_gone: lending.r_gone is not in PostgreSQL's catalog now: dropped, or renamed"
        in d["cdcflow.error.message"]
        for d in dead
    )

    with isolated_source.writing(writer) as pg:
        pg.execute(b"alter table lending.r_old rename to r_new")
        pg.execute(b"update lending.r_new set note = 'after rename' where id = 2")
        pg.execute(b"insert into lending.r_new values (11, 'new row')")
        pg.execute(b"delete from lending.r_new where id = 3")
    report, _ = pipeline.settle(RENAMED)
    found = {t.table: t for t in report.tables}
    assert (found["lending.r_new"].source_rows, found["lending.r_new"].silver_rows) == (10, 2)  # changed since
    assert found["lending.r_new"].missing == 8
    assert found["lending.r_old"].skipped == "the source table does not exist (dropped?)"

    assert "requested incremental snapshot" in cdcflow(isolated_source.cli_env(), "backfill", "start", "lending.r_new")
    wait_backfills_completed(isolated_source.cli_env(), 1)
    isolated_source.run_writer(writer)
    report, _ = pipeline.settle(RENAMED)
    assert not report.drift, describe(report)
    with duckdb.connect(str(pipeline.settings.duckdb_path()), read_only=True) as db:
        assert db.execute("select id, note from silver.r_new where id <= 2 order by id").fetchall() == [
            (1, "before rename"),
            (2, "after rename"),
        ]
        assert db.execute("select count(*), max(id) from silver.r_new").fetchone() == (10, 11)
        # the old name's silver, as it was at the rename
        assert db.execute("select count(*), max(note) filter (where id = 2) from silver.r_old").fetchone() == (
            10,
            "snap 2",
        )
