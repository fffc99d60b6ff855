"""Against the real stack: a new table and an ADD COLUMN flow to the lake without restarting the writer."""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg

from services.common.kafka import consumer, end_positions
from services.common.settings import Settings
from services.stack.runtime import Stack
from tests.fixtures.pipeline import WriterProcess, read_lake_table, wait_until

Conn = psycopg.Connection[tuple[object, ...]]


def _lake_rows(writer: WriterProcess, prefix: str, table: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = read_lake_table(writer.lake_root, prefix, f"lending.{table}").to_pylist()
    return rows


def _dlq(settings: Settings, group: str, topic: str) -> list[dict[str, str]]:
    """Headers of the group's DLQ records that came from ``topic``."""
    reader = consumer(settings.kafka, f"{group}-dlq-reader")
    found = []
    try:
        ends = end_positions(reader, [f"_cdcflow.dlq.{group}"])
        for end in ends:
            end.offset = 0
        reader.assign(ends)
        for message in reader.consume(10_000, timeout=5):
            raw = message.headers() or []
            pairs = raw.items() if isinstance(raw, dict) else raw
            headers = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in pairs}
            if headers.get("cdcflow.source.topic") == topic:
                found.append(headers)
    finally:
        reader.close()
    return found


def test_new_table_and_added_column_flow_through(
    stack: Stack, settings: Settings, pg: Conn, writer: WriterProcess, new_table: str
) -> None:
    prefix, table = settings.kafka.topic_prefix, new_table
    topic = f"{prefix}.lending.{table}"
    pg.execute(f"insert into lending.{table} values (1, 1.50), (2, 2.50), (3, 3.50)".encode())
    writer.start()
    wait_until("v1 rows in the lake", lambda: len(_lake_rows(writer, prefix, table)) == 3)

    pg.execute(
        f"alter table lending.{table} add column note text not null default 'n/a', add column memo text".encode()
    )
    pg.execute(f"insert into lending.{table} values (4, 4.50, 'four'), (5, 5.50, 'five')".encode())
    pg.execute(f"update lending.{table} set amount = 1.75 where id = 1".encode())
    wait_until("rows of the new version", lambda: len(_lake_rows(writer, prefix, table)) == 6)

    rows = {(r["id"], r["_op"]): r for r in _lake_rows(writer, prefix, table)}
    assert rows[(1, "c")]["note"] is None  # written before the column existed
    assert rows[(4, "c")]["note"] == "four"
    assert rows[(1, "u")]["note"] == "n/a"
    assert rows[(1, "u")]["amount"] == Decimal("1.75")

    contracts = sorted((writer.lake_root / "_contracts" / f"lending.{table}").glob("*.avsc"))
    assert [p.name for p in contracts] == ["v00001.avsc", "v00002.avsc"]
    v2 = json.loads(contracts[1].read_text())
    note = next(f for f in v2["fields"] if f["name"] == "note")
    assert note["type"] == ["null", "string"]  # NOT NULL in PostgreSQL, nullable in the lake
    assert _dlq(settings, writer.group, topic) == []
    logs = writer.logs()
    assert '"event": "writer.contract_discovered"' in logs
    assert '"event": "writer.contract_evolved"' in logs
    # rows 2 and 3 hold 'n/a' in PostgreSQL, which no event carried: the writer names the backfill that would
    advice = [json.loads(line) for line in logs.splitlines() if '"event": "writer.backfill_advised"' in line]
    assert [(a["table"], a["columns"], a["command"]) for a in advice] == [
        (f"lending.{table}", ["note"], f"cdcflow backfill start lending.{table}")  # memo has no default
    ]

    # a type change is not additive: its records go to the DLQ as schema mismatches naming the change, and
    # the contract stays at v2
    pg.execute(f"alter table lending.{table} alter column amount type numeric(12, 4)".encode())
    pg.execute(f"insert into lending.{table} values (6, 6.1234, 'six')".encode())
    wait_until("the DLQ record of the retyped column", lambda: len(_dlq(settings, writer.group, topic)) == 1)
    (dead,) = _dlq(settings, writer.group, topic)
    assert dead["cdcflow.error.reason"] == "schema_mismatch"
    assert f"lending.{table} changed type in PostgreSQL (amount: numeric(" in dead["cdcflow.error.message"]
    assert "→ numeric(12,4))" in dead["cdcflow.error.message"]
    assert len(list((writer.lake_root / "_contracts" / f"lending.{table}").glob("*.avsc"))) == 2
    assert all(p.poll() is None for p in writer.procs)  # still running
