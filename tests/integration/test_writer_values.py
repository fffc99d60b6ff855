"""Against the real stack: the lake holds the source's changes value by value, and SIGTERM drains cleanly."""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest

from services.common.kafka import TopicPartition, consumer, end_positions
from services.common.settings import Settings
from tests.fixtures.pipeline import WriterProcess, read_lake_table, wait_for_log_event, wait_until

Conn = psycopg.Connection[tuple[object, ...]]
TABLES = ("customers", "facilities", "transactions")


def _rows(conn: Conn, sql: str, *params: object) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        return cursor.execute(sql.encode(), params).fetchall()


def _canonical(value: Any) -> Any:
    """PostgreSQL's Python values and the lake's, in one comparable form."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict | list) and not isinstance(value, str):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.dumps(json.loads(value), sort_keys=True)
        except ValueError:
            return value
    return value


def _latest_by_key(lake: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    latest: dict[Any, dict[str, Any]] = {}
    for row in lake:  # ordered by partition, offset; one key lives in one partition
        latest[row[key]] = row
    return latest


@pytest.mark.usefixtures("writer_path")  # on both of the writer's paths (tests/fixtures/pipeline.py)
def test_lake_rows_equal_the_source_value_by_value(
    stack: object, settings: Settings, pg: Conn, writer: WriterProcess
) -> None:
    notes = base64.b64encode(secrets.token_bytes(9_000)).decode()
    customer_ids = [
        int(str(r["customer_id"]))
        for r in _rows(
            pg,
            "insert into lending.customers (external_ref, full_name, email, status, customer_type, date_of_birth,"
            " credit_limit, profile, notes) values"
            " (gen_random_uuid(), 'Zoë Ünïcode ✓', 'z@example.com', 'ACTIVE', 'BUSINESS', null,"
            '  999999999999999999.99, \'{"a": [1, 2, {"b": null}]}\', %s),'
            " (gen_random_uuid(), 'Plain', 'p@example.com', 'INACTIVE', 'INDIVIDUAL', '1900-01-01', 0.01, '{}', null)"
            " returning customer_id",
            notes,
        )
    ]
    toasted, plain = customer_ids
    facility_id = int(
        str(
            _rows(
                pg,
                "insert into lending.facilities (customer_id, facility_type, principal_amount, outstanding_balance,"
                " interest_rate, status, originated_on, maturity_date, last_reviewed_at) values"
                " (%s, 'REVOLVING', 123456789012345678.91, 0.00, 99.9999, 'ACTIVE', '2024-02-29', '2099-12-31',"
                "  '2026-05-06 23:59:59.999999') returning facility_id",
                toasted,
            )[0]["facility_id"]
        )
    )
    pg.execute(
        "insert into lending.transactions (facility_id, customer_id, transaction_type, amount, currency,"
        " exchange_rate, booked_at, value_date, reference) values"
        " (%s, %s, 'PAYMENT', 0.01, 'EUR', 12345.678901234567890123456789, '2026-05-06 00:00:00.000001+14',"
        "  '2026-05-06', 'ref ''quoted'' \\ back'),"
        " (%s, %s, 'DEPOSIT', 100, 'USD', null, now(), current_date, null)",
        (facility_id, toasted, facility_id, toasted),
    )
    pg.execute("update lending.customers set status = 'SUSPENDED' where customer_id = %s", (toasted,))  # TOAST
    pg.execute("update lending.facilities set outstanding_balance = 12.34 where facility_id = %s", (facility_id,))
    pg.execute("delete from lending.customers where customer_id = %s", (plain,))

    proc = writer.start()
    prefix = settings.kafka.topic_prefix

    def lake_rows(table: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = read_lake_table(writer.lake_root, prefix, f"lending.{table}").to_pylist()
        return rows

    def landed() -> bool:
        customers = [r for r in lake_rows("customers") if r["customer_id"] in customer_ids]
        facilities = [r for r in lake_rows("facilities") if r["facility_id"] == facility_id]
        transactions = [r for r in lake_rows("transactions") if r["facility_id"] == facility_id]
        return len(customers) >= 4 and len(facilities) >= 2 and len(transactions) >= 2

    wait_until("the changes to land in the lake", landed)

    # every column of every live row equals PostgreSQL's current value
    sources = {
        "customers": ("customer_id", "select * from lending.customers where customer_id = %s", toasted),
        "facilities": ("facility_id", "select * from lending.facilities where facility_id = %s", facility_id),
    }
    for table, (key, sql, key_value) in sources.items():
        (source,) = _rows(pg, sql, key_value)
        lake = _latest_by_key(lake_rows(table), key)[key_value]
        for column, value in source.items():
            if column == "notes":  # the update left it untouched: Debezium could not send it
                assert lake["notes"] is None
                assert lake["_unavailable_columns"] == ["notes"]
                continue
            assert _canonical(lake[column]) == _canonical(value), (table, column)
    for source in _rows(pg, "select * from lending.transactions where facility_id = %s", facility_id):
        lake = _latest_by_key(lake_rows("transactions"), "transaction_id")[source["transaction_id"]]
        for column, value in source.items():
            assert _canonical(lake[column]) == _canonical(value), ("transactions", column)

    customer_history = [r for r in lake_rows("customers") if r["customer_id"] == toasted]
    assert [r["_op"] for r in customer_history] == ["c", "u"]
    assert customer_history[0]["notes"] == notes  # the insert carried the TOASTed value itself
    assert customer_history[0]["credit_limit"] == Decimal("999999999999999999.99")
    deleted = [r for r in lake_rows("customers") if r["customer_id"] == plain]
    assert [r["_op"] for r in deleted] == ["c", "d"]
    assert deleted[1]["email"] is None  # customers keeps the default replica identity: key-only before image
    exchange = [r["exchange_rate"] for r in lake_rows("transactions") if r["facility_id"] == facility_id]
    assert Decimal("12345.678901234567890123456789") in exchange
    for row in lake_rows("facilities"):
        assert row["_source_lsn"] > 0
        assert row["_kafka_topic"] == f"{prefix}.lending.facilities"

    # a library the writer never uses is not loaded by the libraries it does use (services/common/imports.py)
    assert "pandas" not in Path(f"/proc/{proc.pid}/maps").read_text()

    # SIGTERM: exit 0 within the grace period, with everything consumed written and committed
    began = time.monotonic()
    assert writer.terminate(proc, timeout_s=settings.writer.grace_s) == 0
    assert time.monotonic() - began < settings.writer.grace_s
    probe = consumer(settings.kafka, writer.group)
    try:
        ends = end_positions(probe, [f"{prefix}.lending.{t}" for t in TABLES])
        committed = probe.committed([TopicPartition(p.topic, p.partition) for p in ends], timeout=30)
        expected = {(e.topic, e.partition): e.offset for e in ends if e.offset > 0}  # empty partitions: no commit
        assert {(c.topic, c.partition): c.offset for c in committed if (c.topic, c.partition) in expected} == expected
    finally:
        probe.close()
    assert '"event": "writer.stopped"' in writer.logs()


def test_sigterm_while_the_writer_starts_is_a_clean_stop(writer: WriterProcess) -> None:
    proc = writer.start()
    writer.wait_for_sigterm_handler(proc)
    loaded = Path(f"/proc/{proc.pid}/maps").read_text()
    assert "libarrow" not in loaded  # the handler came first: the writer is still starting
    assert "rdkafka" not in loaded
    assert writer.terminate(proc, timeout_s=30) == 0
    assert '"event": "writer.stopped"' in writer.logs()


@dataclass(kw_only=True)
class CliWriterProcess(WriterProcess):
    """The same writer started as ``cdcflow consume``."""

    module: ClassVar[str] = "services.cli"
    args: ClassVar[tuple[str, ...]] = ("consume",)


def test_cdcflow_consume_is_the_writer(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    cli = CliWriterProcess(
        group=f"test-cli-{uuid.uuid4().hex[:8]}", lake_root=tmp_path / "lake", log_dir=tmp_path / "logs"
    )
    try:
        proc = cli.start()
        wait_for_log_event(cli, proc, "writer.assigned")
        assert "pandas" not in Path(f"/proc/{proc.pid}/maps").read_text()  # the CLI starts it as lean
        assert cli.terminate(proc, timeout_s=settings.writer.grace_s) == 0
        assert '"event": "writer.stopped"' in cli.logs()
    finally:
        cli.stop_all()
