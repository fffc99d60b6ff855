"""Against the real stack: row changes in PostgreSQL arrive in Kafka as the Debezium events we rely on."""

from __future__ import annotations

import base64
import json
import secrets
import time
from datetime import UTC, date, datetime
from decimal import Decimal

import psycopg

from services.common.debezium import (
    UNAVAILABLE_VALUE,
    days_to_date,
    micros_to_datetime,
    variable_scale_decimal,
)
from services.common.settings import Settings
from services.stack.runtime import Stack
from tests.fixtures.topics import Event, TopicTail


def _lsn(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute("select pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(str(row[0]))


def _events_for(events: list[Event], table: str, key_column: str, key: int) -> list[Event]:
    return [e for e in events if e.topic.endswith(f".{table}") and e.key and e.key.get(key_column) == key]


def test_changes_arrive_as_debezium_events(
    stack: Stack, settings: Settings, pg: psycopg.Connection[tuple[object, ...]], unique_group: str
) -> None:
    prefix = settings.kafka.topic_prefix
    topics = [f"{prefix}.lending.{t}" for t in ("customers", "facilities", "transactions")]
    tail = TopicTail(settings, topics, unique_group)
    lsn_before = _lsn(pg)
    wall_before_us = time.time_ns() // 1_000
    notes = base64.b64encode(secrets.token_bytes(9_000)).decode()  # incompressible: stored out of line
    try:
        customer = pg.execute(
            "insert into lending.customers (external_ref, full_name, email, status, customer_type, date_of_birth,"
            " credit_limit, profile, notes) values (gen_random_uuid(), 'Test Customer', 't@example.com', 'ACTIVE',"
            " 'INDIVIDUAL', '1985-03-04', 123456789012345678.91, '{\"tier\": \"gold\"}', %s) returning customer_id",
            (notes,),
        ).fetchone()
        assert customer is not None
        customer_id = int(str(customer[0]))
        facility = pg.execute(
            "insert into lending.facilities (customer_id, facility_type, principal_amount, outstanding_balance,"
            " interest_rate, status, originated_on, maturity_date, last_reviewed_at) values (%s, 'MORTGAGE',"
            " 250000.10, 250000.10, 4.3750, 'ACTIVE', '2024-02-29', '2054-02-28', '2026-05-06 07:08:09.123456')"
            " returning facility_id",
            (customer_id,),
        ).fetchone()
        assert facility is not None
        facility_id = int(str(facility[0]))
        pg.execute(
            "insert into lending.transactions (facility_id, customer_id, transaction_type, amount, currency,"
            " exchange_rate, booked_at, value_date) values (%s, %s, 'DISBURSAL', 0.01, 'EUR',"
            " -1234567.000000000000000891, '2026-05-06 07:08:09.654321+02', '2026-05-06')",
            (facility_id, customer_id),
        )
        pg.execute("update lending.customers set status = 'SUSPENDED' where customer_id = %s", (customer_id,))
        pg.execute(
            "update lending.facilities set outstanding_balance = 0.00, status = 'CLOSED' where facility_id = %s",
            (facility_id,),
        )
        pg.execute("delete from lending.facilities where facility_id = %s", (facility_id,))
        pg.execute("truncate lending.transactions")
        lsn_after = _lsn(pg)
        wall_after_us = time.time_ns() // 1_000

        def complete(events: list[Event]) -> bool:
            return (
                len(_events_for(events, "customers", "customer_id", customer_id)) >= 2
                and len(_events_for(events, "facilities", "facility_id", facility_id)) >= 4
                and any(e.value and e.value.get("op") == "t" for e in events)
            )

        events = tail.read_until(complete)
    finally:
        tail.close()

    # customers: insert, then an update that leaves the TOASTed notes untouched
    created, updated = (e.value for e in _events_for(events, "customers", "customer_id", customer_id))
    assert created["op"] == "c"
    assert created["before"] is None
    after = created["after"]
    assert after["credit_limit"] == Decimal("123456789012345678.91")  # NUMERIC(20,2), exact
    assert days_to_date(after["date_of_birth"]) == date(1985, 3, 4)
    assert json.loads(after["profile"]) == {"tier": "gold"}
    assert after["notes"] == notes
    assert updated["op"] == "u"
    assert updated["after"]["status"] == "SUSPENDED"
    assert updated["after"]["notes"] == UNAVAILABLE_VALUE

    # facilities: insert, update, delete with the full before image, then the tombstone
    facility_events = _events_for(events, "facilities", "facility_id", facility_id)
    assert [e.value["op"] if e.value else None for e in facility_events] == ["c", "u", "d", None]
    inserted, changed, deleted, _ = (e.value for e in facility_events)
    assert inserted["after"]["principal_amount"] == Decimal("250000.10")
    assert inserted["after"]["interest_rate"] == Decimal("4.3750")
    assert micros_to_datetime(inserted["after"]["last_reviewed_at"]) == datetime(
        2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC
    )
    assert changed["before"]["outstanding_balance"] == Decimal("250000.10")
    assert changed["after"]["outstanding_balance"] == Decimal("0.00")
    assert deleted["after"] is None
    assert deleted["before"]["facility_id"] == facility_id
    assert deleted["before"]["status"] == "CLOSED"
    assert deleted["before"]["principal_amount"] == Decimal("250000.10")

    # transactions: unconstrained NUMERIC and a timestamptz normalised to UTC with microseconds
    tx = next(
        e.value["after"]
        for e in events
        if e.topic.endswith(".transactions")
        and e.value
        and e.value["op"] == "c"
        and e.value["after"]["facility_id"] == facility_id
    )
    assert variable_scale_decimal(tx["exchange_rate"]) == Decimal("-1234567.000000000000000891")
    assert tx["amount"] == Decimal("0.01")
    assert tx["booked_at"] == "2026-05-06T05:08:09.654321Z"

    # truncate
    truncates = [e.value for e in events if e.value and e.value["op"] == "t"]
    assert truncates
    assert truncates[0]["source"]["table"] == "transactions"

    # every change event carries its position in the WAL, inside the window the test wrote
    for event in events:
        if event.value is None:
            continue
        lsn = event.value["source"]["lsn"]
        assert lsn_before <= lsn <= lsn_after, (lsn_before, lsn, lsn_after)
        # source.ts_us is the commit time in PostgreSQL, in microseconds (same clock, loopback)
        assert wall_before_us - 1_000_000 <= event.value["source"]["ts_us"] <= wall_after_us + 1_000_000
    lsns = [e.value["source"]["lsn"] for e in facility_events if e.value]
    assert lsns == sorted(lsns)
    assert len(set(lsns)) == len(lsns)
    # one key's changes stay in one partition, in order
    assert len({e.partition for e in facility_events}) == 1
