"""Onboarding a table while everything runs: no SQL written by hand, and verify covers it.

A table is created in PostgreSQL with an enum, arrays, bytea, a domain over NUMERIC(12,2), JSONB and a
TOAST-able text, and the connector is restarted so its filtered publication takes the table in. From there
nothing is told about it: the writer discovers its contract from the catalog and publishes it in the lake,
the loader creates its bronze table from that contract, the transform renders its silver models into its
working copy of the dbt project, and ``verify`` compares it with PostgreSQL. The repository's dbt/ and
schemas/ stay untouched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest

from services.common.contracts import TableContract
from services.common.contracts.store import contracts_from_lake
from services.common.kafka import consumer
from services.common.lake import open_lake
from services.common.settings import Settings, load_settings, repo_root
from services.stack.runtime import Stack
from tests.fixtures.pipeline import WriterProcess, partition_ends, wait_until
from tests.fixtures.transform import Pipeline, describe, pipeline_env

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def onboarded(stack: Stack, settings: Settings, pg: Conn) -> Iterator[str]:
    """``lending.<name>`` with the types onboarding must carry, published by a connector restart."""
    name = f"onboard_{uuid.uuid4().hex[:8]}"
    ddl = f"""
        create type lending.{name}_tier as enum ('bronze', 'silver', 'gold');
        create domain lending.{name}_money as numeric(12, 2) check (value >= 0);
        create table lending.{name} (
            id bigint primary key,
            tier lending.{name}_tier not null,
            tags text[],
            scores integer[],
            fingerprint bytea,
            balance lending.{name}_money,
            attributes jsonb,
            remarks text
        )
    """
    pg.execute(ddl.encode())
    stack.connect.restart(settings.connect.connector, timeout_s=120)
    yield name
    pg.execute(f"drop table lending.{name}; drop domain lending.{name}_money; drop type lending.{name}_tier".encode())


def _write_rows(pg: Conn, table: str) -> None:
    remarks = "long remarks " * 1_000  # over 2 kB: PostgreSQL TOASTs it
    with pg.transaction():
        for i in range(1, 41):
            pg.execute(
                f"insert into lending.{table} values (%s, %s, %s, %s, %s, %s, %s::jsonb, %s)".encode(),
                (
                    i,
                    ("bronze", "silver", "gold")[i % 3],
                    [f"t{i}", "shared", "with space"] if i % 4 else None,
                    [i, -i, 0] if i % 5 else [],
                    bytes([i, 0, 255, i % 7]),
                    f"{i * 10.25:.2f}" if i % 6 else None,
                    f'{{"rank": {i}, "nested": {{"ok": {str(i % 2 == 0).lower()}}}}}',
                    remarks if i % 2 else f"short {i}",
                ),
            )
    pg.execute(f"update lending.{table} set tier = 'gold', balance = balance + 1 where id % 3 = 0".encode())
    pg.execute(f"update lending.{table} set tags = array_append(tags, 'late') where id % 7 = 0".encode())
    pg.execute(f"delete from lending.{table} where id % 10 = 0".encode())


EVENTS = 40 + 13 + 5 + 4 + 4  # inserts, two rounds of updates, deletes and their tombstones


def _published(settings: Settings, topic: str) -> int:
    """How many records Debezium has published to ``topic`` so far (0 until it exists)."""
    probe = consumer(settings.kafka, f"test-probe-{uuid.uuid4().hex[:8]}")
    try:
        if topic not in probe.list_topics(timeout=10).topics:
            return 0
    finally:
        probe.close()
    return sum(partition_ends(settings, [topic]).values())


def test_a_table_created_at_run_time_reaches_silver_without_hand_written_sql(
    settings: Settings, pg: Conn, writer: WriterProcess, onboarded: str, tmp_path: Path
) -> None:
    env = pipeline_env(writer, tmp_path)
    configured = load_settings(env)
    qualified = f"lending.{onboarded}"
    tracked_before = _tracked_files()
    _write_rows(pg, onboarded)

    def contracts() -> list[TableContract]:
        lake = open_lake(configured.lake, configured.lake_root())
        try:
            return [c for c in contracts_from_lake(lake) if c.qualified_name == qualified][-1:]
        finally:
            lake.close()

    topic = f"{settings.kafka.topic_prefix}.{qualified}"
    wait_until(f"{EVENTS} change events in {topic}", lambda: _published(settings, topic) >= EVENTS)
    report, _ = Pipeline(settings, writer, env, contracts).settle([qualified])
    assert [t.table for t in report.tables] == [qualified], describe(report)
    assert not report.drift, describe(report)
    (compared,) = report.tables
    assert compared.source_rows == compared.silver_rows == 36

    with duckdb.connect(str(configured.duckdb_path()), read_only=True) as conn:
        row = conn.execute(
            f"select tier, tags, scores, fingerprint, balance, length(remarks) from silver.{onboarded} where id = 21"
        ).fetchone()
        history = conn.execute(f"select count(*) from silver.{onboarded}_history where id = 21").fetchone()
    assert row is not None
    assert history is not None
    tier, tags, scores, fingerprint, balance, remarks = row
    assert (tier, tags, scores) == ("gold", ["t21", "shared", "with space", "late"], [21, -21, 0])
    assert bytes(fingerprint) == bytes([21, 0, 255, 0])
    assert str(balance) == "216.25"
    assert remarks == len("long remarks " * 1_000)
    assert history[0] == 3  # the insert and the two updates

    work_dir = Path(env["CDCFLOW_TRANSFORM__WORK_DIR"])
    rendered = work_dir / "project" / "models" / "silver"
    assert {p.name for p in rendered.glob(f"{onboarded}*.sql")} == {f"{onboarded}.sql", f"{onboarded}_history.sql"}
    assert _tracked_files() == tracked_before, "onboarding must not touch the repository's dbt/ or schemas/"


def _tracked_files() -> dict[str, float]:
    root = repo_root()
    return {str(p): p.stat().st_mtime for folder in ("dbt/models", "schemas") for p in (root / folder).rglob("*")}
