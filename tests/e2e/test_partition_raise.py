"""A captured topic's partition count raised, then its table backfilled: silver equals the source.

More partitions is how the writers scale out. Raising a Debezium topic's partition count moves keys: a key's
changes after the raise go to another partition than its earlier ones. Silver orders streamed versions by
their LSN, so those land anyway; but a read of an incremental snapshot carries no LSN and is placed after its
key's earlier versions — which, for a moved key, are in the partition the key left.

``lending.ledger`` is captured and carried to silver. Its topic goes from 6 to 12 partitions and the
connector's task restarts (its producer sees them at once rather than at its next metadata refresh). Every row
is then updated with a memo larger than the writer's value limit: the writer dead-letters those changes and
``verify`` finds every row different. With the limit raised, ``cdcflow backfill start`` reads the table again:
its reads repair every row, the moved keys' included — zero drift.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.cimpl import NewPartitions

from services.common.kafka import admin_client
from services.stack.runtime import Stack
from tests.fixtures.cli import cdcflow, wait_backfills_completed
from tests.fixtures.pipeline import (
    WriterProcess,
    dlq_messages,
    header_dict,
    partition_ends,
    read_partitions,
    wait_until,
)
from tests.fixtures.source import IsolatedSource
from tests.fixtures.transform import describe

ROWS, PARTITIONS, RAISED = 200, 6, 12
LEDGER = f"""
create table lending.ledger (id bigint primary key, balance bigint not null, memo text);
insert into lending.ledger select g, 0, null from generate_series(1, {ROWS}) g;
"""
TABLE = "lending.ledger"
VALUE_LIMIT = 4096
MEMO_BYTES = 8000  # the update's change event is larger than VALUE_LIMIT


def _partitions_by_key(isolated: IsolatedSource, topic: str) -> dict[int, list[int]]:
    """Every change event's partition, per ledger id, in the order of the topic's partitions."""
    seen: dict[int, list[int]] = defaultdict(list)
    for message in read_partitions(isolated.settings, partition_ends(isolated.settings, [topic])):
        if message.key():
            seen[json.loads(message.key() or b"{}")["id"]].append(int(message.partition() or 0))
    return seen


@pytest.mark.parametrize("isolated_source", [LEDGER], indirect=True)
def test_a_backfill_after_a_partition_raise_repairs_moved_keys(
    isolated_source: IsolatedSource, writer: WriterProcess, stack: Stack, tmp_path: Path
) -> None:
    settings = isolated_source.settings
    topic = f"{settings.kafka.topic_prefix}.{TABLE}"
    pipeline = isolated_source.pipeline(
        writer, tmp_path, lambda c: c.qualified_name == TABLE, {"CDCFLOW_WRITER__MAX_VALUE_BYTES": str(VALUE_LIMIT)}
    )
    cli_env = isolated_source.cli_env()
    isolated_source.wait_captured()
    report, _ = pipeline.settle([TABLE])
    assert not report.drift, describe(report)

    admin = admin_client(settings.kafka)
    assert len(admin.list_topics(topic, timeout=30).topics[topic].partitions) == PARTITIONS
    for future in admin.create_partitions([NewPartitions(topic, RAISED)], operation_timeout=30).values():
        future.result()
    cdcflow(cli_env, "connector", "restart", settings.connect.connector)
    stack.connect.wait_running(settings.connect.connector, stack.settings.stack.start_timeout_s)

    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as conn:
        conn.execute("update lending.ledger set balance = id * 10, memo = repeat('m', %s)", (MEMO_BYTES,))
    isolated_source.wait_captured()
    moved = {key for key, parts in _partitions_by_key(isolated_source, topic).items() if parts[0] != parts[-1]}
    assert len(moved) > ROWS // 4, f"only {len(moved)} of {ROWS} keys changed partition"

    pipeline.run([TABLE])
    refused = [header_dict(m) for m in dlq_messages(settings, writer.group)]
    assert len(refused) == ROWS
    assert {h["cdcflow.error.reason"] for h in refused} == {b"oversized"}
    lost = pipeline.verify()
    [ledger] = lost.tables
    assert ledger.different == ROWS, describe(lost)

    writer.env_overrides["CDCFLOW_WRITER__MAX_VALUE_BYTES"] = str(8 << 20)
    cdcflow(cli_env, "backfill", "start", TABLE)
    wait_backfills_completed(cli_env, 1)
    isolated_source.wait_captured()
    wait_until(
        "every row read again",
        lambda: all(len(parts) >= 3 for parts in _partitions_by_key(isolated_source, topic).values()),
        timeout_s=60,
    )
    report, _ = pipeline.settle([TABLE])
    assert not report.drift, describe(report)
    [ledger] = report.tables
    assert ledger.source_rows == ledger.silver_rows == ROWS
