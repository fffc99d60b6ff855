"""Two databases, both with ``public.users``, captured at once: each lands in its own tables, zero drift.

``cdcflow source add`` writes each source's connector file (into a connect folder of the test, beside a copy
of the stack's own) and registers it with the running Connect worker. The primary connector file it copies
carries a topic creation group that gives the second source's ``users`` topic one partition (README, "Lake
files and partitions"): the group reaches the new files, Connect honours it, and a one-partition topic lands
like a six-partition one. Each source has its own lake writer (its topic prefix, database and group); one
loader loads both prefixes, one transform builds silver, and verify reads each source's table from its own
database. The test removes what it created: connectors, slots, databases and topics. The stack is never
restarted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import psycopg
import pytest

from services.common.contracts import TableContract, load_contracts
from services.common.contracts.store import contracts_from_lake
from services.common.kafka import admin_client
from services.common.lake import open_lake
from services.common.settings import Settings, load_settings, repo_root
from services.common.signals import Shutdown
from services.loader.wiring import run_loader
from services.stack.processes import wait_for
from services.stack.runtime import Stack
from services.transform.verify import verify_warehouse
from services.transform.wiring import run_transform
from tests.fixtures.cli import cdcflow
from tests.fixtures.pipeline import WriterProcess, partition_ends, wait_until, wait_until_committed
from tests.fixtures.source import maintenance
from tests.fixtures.transform import describe

Conn = psycopg.Connection[tuple[object, ...]]

USERS = """
    create table public.users (
        id bigint primary key,
        name text not null,
        email text,
        score numeric(10, 2),
        avatar bytea,
        joined_at timestamptz default now()
    );
    create table public.extra (id integer primary key)  -- captured, never written
"""
SNAPSHOT_ROWS, NEW_ROWS, UPDATES, DELETES = 30, 10, 5, 4
EVENTS = SNAPSHOT_ROWS + NEW_ROWS + UPDATES + 2 * DELETES  # deletes are followed by tombstones


@dataclass(frozen=True)
class Captured:
    name: str  # the source's name: its topic prefix, connector and database

    @property
    def slot(self) -> str:
        return f"cdcflow_{self.name}"

    @property
    def topic(self) -> str:
        return f"{self.name}.public.users"


def _database(settings: Settings, name: str) -> Conn:
    return psycopg.connect(settings.postgres.model_copy(update={"database": name}).dsn(), autocommit=True)


def _rows(conn: Conn, source: str, ids: range) -> None:
    with conn.cursor() as cursor:
        cursor.executemany(
            "insert into public.users (id, name, email, score, avatar) values (%s, %s, %s, %s, %s)",
            [
                (
                    i,
                    f"{source} user {i}",
                    None if i % 7 == 0 else f"u{i}@{source}.example",
                    f"{i * 1.5:.2f}",
                    bytes([i]),
                )
                for i in ids
            ],
        )


@pytest.fixture
def connect_dir(tmp_path: Path) -> Path:
    """A connect folder of the test: the stack's connector files, and the ones the test adds."""
    folder = tmp_path / "connect"
    shutil.copytree(repo_root() / "connect" / "connectors", folder / "connectors")
    return folder


@pytest.fixture
def sources(stack: Stack, settings: Settings, connect_dir: Path) -> Iterator[list[Captured]]:
    tag = uuid.uuid4().hex[:8]
    created = [Captured(f"two{tag}a"), Captured(f"two{tag}b")]
    with maintenance(settings) as conn:
        for source in created:
            conn.execute(f'create database "{source.name}"'.encode())
    try:
        for source in created:
            with _database(settings, source.name) as conn:
                conn.execute(USERS.encode())
                _rows(conn, source.name, range(1, SNAPSHOT_ROWS + 1))
        yield created
    finally:
        _remove(stack, settings, created)


def _remove(stack: Stack, settings: Settings, created: list[Captured]) -> None:
    for source in created:
        stack.connect.delete(source.name)
    for source in created:

        def released(slot: str = source.slot) -> bool:
            return not any(name == slot and active for name, active in stack.postgres.slots())

        wait_for(f"slot {source.slot} to be released", released, 60)
        stack.postgres.drop_slot(source.slot, source.name)
    with maintenance(settings) as conn:
        for source in created:
            conn.execute(f'drop database if exists "{source.name}" with (force)'.encode())
    admin = admin_client(settings.kafka)
    names = {s.name for s in created}
    topics = [t for t in admin.list_topics(timeout=30).topics if t.split(".")[0] in names or t.rsplit(".")[-1] in names]
    for future in admin.delete_topics(topics, operation_timeout=30).values() if topics else []:
        future.result()


def _quiet_group(connect_dir: Path, settings: Settings, quiet: Captured) -> None:
    """A topic creation group in the primary connector file: ``quiet``'s ``users`` topic gets one partition."""
    path = connect_dir / "connectors" / f"{settings.connect.connector}.json"
    document = json.loads(path.read_text())
    document["config"] |= {
        "topic.creation.groups": "quiet",
        "topic.creation.quiet.include": re.escape(quiet.topic),
        "topic.creation.quiet.partitions": "1",
    }
    path.write_text(json.dumps(document, indent=2))


def _partitions(settings: Settings, topic: str) -> int:
    return len(admin_client(settings.kafka).list_topics(topic, timeout=30).topics[topic].partitions)


def _source_add(env: dict[str, str], source: Captured, settings: Settings) -> str:
    pg = settings.postgres
    dsn = f"postgresql://{pg.user}@{pg.host}:{pg.port}/{source.name}"
    return cdcflow(env, "source", "add", source.name, "--dsn", dsn, "--tables", "public.users,public.extra")


def _stream(settings: Settings, source: Captured) -> None:
    """Changes after the snapshot: inserts, updates (one sets a column NULL), deletes."""
    with _database(settings, source.name) as conn:
        _rows(conn, source.name, range(SNAPSHOT_ROWS + 1, SNAPSHOT_ROWS + NEW_ROWS + 1))
        conn.execute(f"update public.users set email = null, score = score + 1 where id <= {UPDATES}".encode())
        conn.execute(f"delete from public.users where id > {SNAPSHOT_ROWS + NEW_ROWS - DELETES}".encode())


def _published(settings: Settings, topic: str) -> int:
    try:
        return sum(partition_ends(settings, [topic]).values())
    except Exception:  # the topic does not exist yet
        return 0


def test_two_databases_with_public_users_land_apart_with_zero_drift(
    stack: Stack, settings: Settings, sources: list[Captured], connect_dir: Path, tmp_path: Path
) -> None:
    primary = settings.kafka.topic_prefix
    env = {
        **os.environ,
        "CDCFLOW_STACK__CONNECT_DIR": str(connect_dir),
        "CDCFLOW_LAKE__ROOT": str(tmp_path / "lake"),
        "CDCFLOW_WAREHOUSE__DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "CDCFLOW_TRANSFORM__WORK_DIR": str(tmp_path / "transform"),
        "CDCFLOW_LOADER__HEALTH_PORT": "0",
        "CDCFLOW_TRANSFORM__HEALTH_PORT": "0",
        "CDCFLOW_LOG__FORMAT": "json",
    }
    _quiet_group(connect_dir, settings, sources[1])
    for source in sources:
        printed = _source_add(env, source, settings)
        assert f"CDCFLOW_KAFKA__TOPIC_PREFIX={source.name}" in printed
        assert (connect_dir / "connectors" / f"{source.name}.json").exists()
    assert not (repo_root() / "connect" / "connectors" / f"{sources[0].name}.json").exists()
    configured = load_settings(env)
    # what `cdcflow stack down` drops: every source's slot on the stack's own PostgreSQL
    assert {(s.slot, s.name) for s in sources} <= set(Stack(configured)._local_slots())

    for source in sources:
        _stream(settings, source)
    for source in sources:
        topic = source.topic

        def arrived(topic: str = topic) -> bool:
            return _published(settings, topic) >= EVENTS

        wait_until(f"{EVENTS} events in {topic}", arrived)
    assert [_partitions(settings, s.topic) for s in sources] == [settings.kafka.topic_partitions, 1]

    # each source's connector metrics are its own: Debezium names them after the topic prefix
    exporter = stack.connect.jmx_exporter_url
    assert exporter, "the Connect worker runs without its JMX exporter"
    metrics = httpx.get(exporter, timeout=10).text
    for source in sources:
        connected = f'debezium_metrics_Connected{{connector="{source.name}",context="streaming",plugin="postgres"}} 1.0'
        assert connected in metrics, f"no streaming metrics of {source.name}"

    (tmp_path / "logs").mkdir()
    for source in sources:
        writer = WriterProcess(
            group=f"test-writer-{source.name}",
            lake_root=tmp_path / "lake",
            log_dir=tmp_path / "logs",
            env_overrides={
                "CDCFLOW_KAFKA__TOPIC_PREFIX": source.name,
                "CDCFLOW_KAFKA__PRIMARY_PREFIX": primary,
                "CDCFLOW_POSTGRES__DATABASE": source.name,
                "CDCFLOW_WRITER__STATE_DIR": str(tmp_path / f"writer-state-{source.name}"),
            },
        )
        ends = partition_ends(settings, [source.topic])
        proc = writer.start()
        try:
            wait_until_committed(settings, writer.group, ends)
        finally:
            assert writer.terminate(proc) == 0, writer.logs()[-3000:]

    assert run_loader(configured, Shutdown(), once=True) == 0
    assert run_transform(configured, Shutdown(), once=True) == 0, "dbt build failed (logs above)"

    lake = open_lake(configured.lake, configured.lake_root())
    try:
        contracts: list[TableContract] = [c for c in contracts_from_lake(lake) if c.source in {s.name for s in sources}]
    finally:
        lake.close()
    assert sorted(c.full_name for c in contracts) == sorted(f"{s.name}/public.users" for s in sources)
    # `cdcflow schemas generate --source` reads the same catalog into the source's own folder
    for source in sources:
        cdcflow(env, "schemas", "generate", "--source", source.name, "--directory", str(tmp_path / "schemas"))
    generated = {c.full_name: c for c in load_contracts(tmp_path / "schemas")}
    assert sorted(generated) == sorted(f"{s.name}/public.{t}" for s in sources for t in ("extra", "users"))
    assert [generated[c.full_name] for c in contracts] == contracts
    assert (tmp_path / "schemas" / sources[0].name / "public.users.avsc").exists()
    report = verify_warehouse(configured, contracts, every_captured=False)
    assert not report.drift, describe(report)
    assert [(t.table, t.silver, t.source_rows, t.silver_rows) for t in report.tables] == [
        (
            f"{s.name}/public.users",
            f"silver.{s.name}__users",
            SNAPSHOT_ROWS + NEW_ROWS - DELETES,
            SNAPSHOT_ROWS + NEW_ROWS - DELETES,
        )
        for s in sources
    ]

    # every captured table is listed: the empty one as not compared, with why
    prefixes = {s.name for s in sources}
    listed = verify_warehouse(configured, contracts, every_captured=True).tables
    ours = {t.table: t for t in listed if t.table.split("/")[0] in prefixes}
    assert sorted(ours) == sorted(f"{s.name}/public.{t}" for s in sources for t in ("extra", "users"))
    for source in sources:
        assert ours[f"{source.name}/public.users"].drift is False
        assert ours[f"{source.name}/public.extra"].skipped == "captured but empty: no change of it has been seen yet"

    with duckdb.connect(str(configured.duckdb_path()), read_only=True) as conn:
        for source in sources:
            names = conn.execute(
                f"select distinct split_part(name, ' ', 1) from silver.\"{source.name}__users\""
            ).fetchall()
            assert names == [(source.name,)]  # no row of the other database
            (topics,) = conn.execute(
                f'select list(distinct _kafka_topic) from bronze."{source.name}__public__users"'
            ).fetchone() or ([],)
            assert topics == [source.topic]

    # `backfill deletes --source`: the second source's table, read from its own database, sent to its own topic; a
    # row just deleted there (its delete still on its way: no writer runs) is one silver holds and it lacks
    second = sources[1]
    second_dsn = settings.postgres.model_copy(update={"database": second.name}).dsn()
    with psycopg.connect(second_dsn, autocommit=True) as source_db:
        source_db.execute("delete from public.users where id = (select min(id) from public.users)")
    counted = json.loads(
        cdcflow(env, "backfill", "deletes", "public.users", "--source", second.name, "--dry-run", "--json")
    )
    assert [(r["table"], r["topic"], r["absent"], r["sent"]) for r in counted] == [
        (f"{second.name}/public.users", second.topic, 1, 0)
    ]

    # `cdcflow source remove` leaves no slot, connector or file behind
    for source in sources:
        cdcflow(env, "source", "remove", source.name)
        assert not (connect_dir / "connectors" / f"{source.name}.json").exists()
        assert stack.connect.connector_status(source.name) is None
    left = {name for name, _ in stack.postgres.slots()}
    assert not left & {s.slot for s in sources}, left
