"""Against the real stack: a PostgreSQL outage is transient for the writer's catalog lookups.

The writer reaches PostgreSQL through a TCP proxy the test starts and stops (the stack's PostgreSQL itself
keeps running for Debezium). While the proxy is down, a new table and then a new column arrive: the
records wait, none goes to the DLQ, and they land once PostgreSQL is reachable again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from services.common.settings import Settings
from services.stack.runtime import Stack
from tests.fixtures.net import TcpProxy
from tests.fixtures.pipeline import WriterProcess, dlq_coordinate, dlq_messages, read_lake_table, wait_until

Conn = psycopg.Connection[tuple[object, ...]]
OUTAGE_S = 8.0


@pytest.fixture
def proxy(settings: Settings) -> Iterator[TcpProxy]:
    relay = TcpProxy((settings.postgres.host, settings.postgres.port))
    relay.start()
    yield relay
    relay.stop()


def _lake_rows(writer: WriterProcess, prefix: str, table: str) -> list[dict[str, object]]:
    try:
        rows: list[dict[str, object]] = read_lake_table(writer.lake_root, prefix, f"lending.{table}").to_pylist()
    except (FileNotFoundError, ValueError):  # nothing written yet
        return []
    return rows


def _dead_lettered(settings: Settings, group: str, topic: str) -> list[tuple[str, int, int]]:
    try:
        return [c for c in map(dlq_coordinate, dlq_messages(settings, group)) if c[0] == topic]
    except KeyError:  # the writer has not created its DLQ topic yet
        return []


def _wait_for_catalog_retries(writer: WriterProcess, seen: int) -> int:
    """Wait until the writer has met the outage again (a catalog lookup refused and the partition retried)."""

    def failures() -> int:
        logs = writer.logs()
        return logs.count('"event": "writer.catalog_unavailable"') + logs.count(
            '"event": "writer.catalog_lookup_failed"'
        )

    wait_until("the writer to meet the outage", lambda: failures() > seen, timeout_s=60)
    return failures()


def test_a_postgresql_outage_delays_new_tables_and_columns_and_dead_letters_nothing(
    stack: Stack, settings: Settings, pg: Conn, writer: WriterProcess, new_table: str, *, proxy: TcpProxy
) -> None:
    prefix, table = settings.kafka.topic_prefix, new_table
    topic = f"{prefix}.lending.{table}"
    writer.env_overrides.update(
        {
            "CDCFLOW_POSTGRES__PORT": str(proxy.port),
            "CDCFLOW_WRITER__RETRY_BACKOFF_S": "0.2",
            "CDCFLOW_WRITER__RETRY_BACKOFF_MAX_S": "1",
        }
    )
    # a new table while PostgreSQL is unreachable: its contract cannot be looked up yet
    proxy.stop()
    pg.execute(f"insert into lending.{table} values (1, 1.50), (2, 2.50), (3, 3.50)".encode())
    writer.start()
    seen = _wait_for_catalog_retries(writer, 0)
    time.sleep(OUTAGE_S)
    assert _lake_rows(writer, prefix, table) == []
    assert _dead_lettered(settings, writer.group, topic) == []
    proxy.start()
    wait_until("the new table's rows in the lake", lambda: len(_lake_rows(writer, prefix, table)) == 3)

    # a new column while PostgreSQL is unreachable again
    proxy.stop()
    pg.execute(f"alter table lending.{table} add column note text".encode())
    pg.execute(f"insert into lending.{table} values (4, 4.50, 'four'), (5, 5.50, 'five')".encode())
    _wait_for_catalog_retries(writer, seen)
    time.sleep(OUTAGE_S)
    assert len(_lake_rows(writer, prefix, table)) == 3
    proxy.start()
    wait_until("the rows of the new column in the lake", lambda: len(_lake_rows(writer, prefix, table)) == 5)

    rows = {r["id"]: r for r in _lake_rows(writer, prefix, table)}
    assert rows[4]["note"] == "four"
    assert _dead_lettered(settings, writer.group, topic) == []
    assert all(p.poll() is None for p in writer.procs)
