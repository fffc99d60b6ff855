"""Tables without a primary key, keyed by a unique index, reach silver with zero drift; one that cannot be
captured or published is refused before anything changes.

Real schemas have them: a code table whose identity is a unique constraint over two columns, a device list
whose replica identity is a unique index (with another, nullable, unique index whose name sorts first). Debezium
keys such a table's change events by its first unique index (clustered first, then by name); cdcflow took no
table without a primary key, so every change of these went to the DLQ. Now the contract takes the key Debezium
sends — checked here against the keys of the Kafka records themselves — and rows keep their identity through
updates, key changes and deletes; a table added later with `cdcflow source add-table` is snapshot by that key.

A table with no key at all and the default replica identity is another matter: once in a publication,
PostgreSQL refuses its UPDATE and DELETE, so `cdcflow source add-table` used to break the application's writes
to it (it published the table, then failed on the missing key). It now refuses before changing anything, as
it does an UNLOGGED table, which no publication can take (Debezium's publication update then fails, and the
connector captures nothing of its whole source); `cdcflow source add` refuses a database holding either.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import duckdb
import httpx
import psycopg
import pytest

from tests.fixtures.cli import CDCFLOW, cdcflow, wait_backfills_completed
from tests.fixtures.pipeline import WriterProcess, dlq_messages, header_dict, partition_ends, read_partitions
from tests.fixtures.source import IsolatedSource
from tests.fixtures.transform import describe

KEYS = {"lending.u_codes": ("code", "region"), "lending.u_devices": ("serial",), "lending.u_late": ("sku",)}
SCHEMA_SQL = """
create table lending.u_codes (
    code   text not null,
    region integer not null,
    label  text,
    amount numeric(10, 2),
    constraint u_codes_code_region_key unique (code, region)
);
alter table lending.u_codes replica identity full;
insert into lending.u_codes select 'c' || g, g % 3, 'label ' || g, g * 1.25 from generate_series(1, 40) g;

create table lending.u_devices (serial text not null, owner text, seen_at timestamptz);
create unique index u_devices_a_owner on lending.u_devices (owner);
create unique index u_devices_serial on lending.u_devices (serial);
alter table lending.u_devices cluster on u_devices_serial;
alter table lending.u_devices replica identity using index u_devices_serial;
insert into lending.u_devices
select 's' || g, case when g % 4 = 0 then null else 'o' || g end, timestamptz '2026-01-01 00:00+00' + g * interval '1 h'
  from generate_series(1, 30) g;

create table lending.u_log (at timestamptz not null, line text);  -- no key at all: refused, its rows to the DLQ
alter table lending.u_log replica identity full;
insert into lending.u_log select timestamptz '2026-01-01 00:00+00' + g * interval '1 s', 'line ' || g
  from generate_series(1, 3) g;
"""
CHANGES_SQL = """
update lending.u_codes set label = 'changed' where region = 1;
update lending.u_codes set code = code || 'x' where region = 2 and code like 'c1%';
delete from lending.u_codes where region = 0 and code like 'c2%';
insert into lending.u_codes values ('n1', 9, null, null), ('n2', 9, 'n', 0.5);
update lending.u_devices set owner = 'moved ' || serial where serial in ('s1', 's2');
update lending.u_devices set serial = serial || '-b', seen_at = null where serial = 's3';
delete from lending.u_devices where serial in ('s5', 's6');
insert into lending.u_devices values ('s99', null, now());
insert into lending.u_log values (now(), 'streamed');
create table lending.u_late (sku text not null, qty integer);
create unique index u_late_sku on lending.u_late (sku);
alter table lending.u_late replica identity using index u_late_sku;
insert into lending.u_late select 'k' || g, g from generate_series(1, 20) g;
"""
LATE_CHANGES_SQL = """
update lending.u_late set qty = qty * 100 where qty % 2 = 0;
delete from lending.u_late where sku in ('k3', 'k4');
insert into lending.u_late values ('k21', null);
"""
SILVER_COLUMNS = {
    "lending.u_codes": "code, region, label, amount",
    "lending.u_devices": "serial, owner, seen_at",
    "lending.u_late": "sku, qty",
}


@pytest.mark.parametrize("isolated_source", [SCHEMA_SQL], indirect=True)
def test_tables_keyed_by_a_unique_index_reach_silver_with_zero_drift(
    isolated_source: IsolatedSource, writer: WriterProcess, tmp_path: Path
) -> None:
    source = isolated_source.settings
    pipeline = isolated_source.pipeline(writer, tmp_path, lambda c: c.qualified_name in KEYS)
    cli_env = isolated_source.cli_env()

    with isolated_source.writing(writer) as pg:
        pg.execute(CHANGES_SQL.encode())
        added = cdcflow(cli_env, "source", "add-table", "lending.u_late")
        assert "lending.u_late added to publication" in added
        assert "task restarted to learn lending.u_late" in added  # the include list took it already
        wait_backfills_completed(cli_env, 1)
        pg.execute(LATE_CHANGES_SQL.encode())

    report, _ = pipeline.settle(list(KEYS))
    assert not report.drift, describe(report)
    rows = {t.table: (t.source_rows, t.silver_rows) for t in report.tables}
    assert rows == {"lending.u_codes": (39, 39), "lending.u_devices": (29, 29), "lending.u_late": (19, 19)}
    # the table without a key: each of its changes is in the DLQ, saying why
    dead = [{k: (v or b"").decode() for k, v in header_dict(m).items()} for m in dlq_messages(source, writer.group)]
    assert len(dead) == 4
    assert {d["cdcflow.source.topic"] for d in dead} == {f"{source.kafka.topic_prefix}.lending.u_log"}
    assert {d["cdcflow.error.reason"] for d in dead} == {"unknown_table"}
    assert all(
        "no contract for table lending.u_log: lending.u_log has no primary key and no unique index"
        in d["cdcflow.error.message"]
        for d in dead
    )
    assert {c.qualified_name: c.primary_key for c in pipeline.contracts()} == KEYS

    # Debezium's own keys, read from Kafka, are the contract's key columns of each change's row image
    topics = [f"{source.kafka.topic_prefix}.{table}" for table in KEYS]
    for message in read_partitions(source, partition_ends(source, topics)):
        if message.value() is None:
            continue
        event = json.loads(message.value() or b"null")
        table = f"{event['source']['schema']}.{event['source']['table']}"
        image = event["after"] or event["before"]
        assert json.loads(message.key() or b"null") == {k: image[k] for k in KEYS[table]}, event

    # silver read with DuckDB alone equals PostgreSQL read with psycopg, row by row
    with (
        psycopg.connect(source.postgres.dsn()) as pg,
        duckdb.connect(str(pipeline.settings.duckdb_path()), read_only=True) as db,
    ):
        for table, columns in SILVER_COLUMNS.items():
            order = ", ".join(KEYS[table])
            expected = pg.execute(f"select {columns} from {table} order by {order}".encode()).fetchall()
            silver = f"silver.{table.split('.', 1)[1]}"
            assert db.execute(f"select {columns} from {silver} order by {order}").fetchall() == expected, table


def test_a_table_that_cannot_be_published_is_refused_and_nothing_changes(
    isolated_source: IsolatedSource, tmp_path: Path
) -> None:
    source = isolated_source.settings
    publication = f"select tablename from pg_publication_tables where pubname = '{source.postgres.database}'"
    with psycopg.connect(source.postgres.dsn(), autocommit=True) as pg:
        pg.execute("create table lending.u_notes (id integer, note text)")  # no key at all
        pg.execute("create table lending.u_tags (tag text not null unique)")  # a key, but no replica identity
        pg.execute("create unlogged table lending.u_stage (id integer primary key)")  # no publication takes it
        pg.execute('create table lending.u_cased (id integer primary key, "ID" integer)')  # Debezium fails on it
        pg.execute("insert into lending.u_notes values (1, 'a'); insert into lending.u_tags values ('a')")
        published = pg.execute(publication.encode()).fetchall()

        for table, why in [
            ("lending.u_notes", "lending.u_notes has no primary key and no unique index"),
            ("lending.u_tags", "lending.u_tags has no primary key and REPLICA IDENTITY DEFAULT: once published"),
            ("lending.u_stage", "lending.u_stage is UNLOGGED: PostgreSQL cannot publish it"),
            ("lending.u_cased", "lending.u_cased: columns 'id' and 'ID' differ only in case"),
        ]:
            done = subprocess.run(
                [CDCFLOW, "source", "add-table", table],
                capture_output=True, text=True, env=isolated_source.cli_env(), timeout=120, check=False,
            )  # fmt: skip
            assert done.returncode != 0
            assert why in done.stderr
            assert "othing was changed" in done.stderr

        assert pg.execute(publication.encode()).fetchall() == published  # neither was published
        assert pg.execute("update lending.u_notes set note = 'b'").rowcount == 1  # both still writable
        assert pg.execute("update lending.u_tags set tag = 'b'").rowcount == 1

    # the running connector's lists take those tables too: registering its config again is refused, as it is
    connector, url = source.connect.connector, source.connect.url
    registered = httpx.get(f"{url}/connectors/{connector}/config", timeout=10).json()
    connect_dir = tmp_path / "registered"
    (connect_dir / "connectors").mkdir(parents=True)
    config = {k: v for k, v in registered.items() if k != "name"}
    (connect_dir / "connectors" / f"{connector}.json").write_text(json.dumps({"name": connector, "config": config}))
    done = subprocess.run(
        [CDCFLOW, "deploy", "register", "--timeout", "30"],
        capture_output=True, text=True, env={**os.environ, "CDCFLOW_STACK__CONNECT_DIR": str(connect_dir)},
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"connector '{connector}' not registered" in done.stderr
    assert "lending.u_tags has no primary key and REPLICA IDENTITY DEFAULT" in done.stderr
    assert "lending.u_stage is UNLOGGED" in done.stderr
    assert "lending.u_cased has columns whose names differ only in case" in done.stderr
    assert httpx.get(f"{url}/connectors/{connector}/config", timeout=10).json() == registered
    with psycopg.connect(source.postgres.dsn(), autocommit=True) as pg:
        assert pg.execute(publication.encode()).fetchall() == published

    # a new source over the whole database would publish lending.u_tags too: refused, no file written
    env, dsn = isolated_source.source_add_env(tmp_path)
    written = Path(env["CDCFLOW_STACK__CONNECT_DIR"]) / "connectors" / "keyless.json"
    done = subprocess.run(
        [CDCFLOW, "source", "add", "keyless", "--dsn", dsn, "--no-register"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "lending.u_tags has no primary key and REPLICA IDENTITY DEFAULT" in done.stderr
    assert "lending.u_notes" in done.stderr
    assert "lending.u_stage is UNLOGGED" in done.stderr
    assert "lending.u_cased has columns whose names differ only in case" in done.stderr
    assert not written.exists()
    added = cdcflow(env, "source", "add", "keyless", "--dsn", dsn, "--tables", "lending.customers", "--no-register")
    assert "wrote" in added
    assert written.exists()
