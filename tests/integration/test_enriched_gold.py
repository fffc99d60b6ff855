"""The enricher's output end to end: ``<prefix>.enriched.transactions`` landed by the lake writer like a
captured table, loaded into bronze, built into ``silver.enriched__transactions`` and the gold mart of payments
by customer type and facility status per month.

Everything runs under the test's own topic prefix (tests/fixtures/enricher.py). The mart's figures are checked
against the as-of join computed here from the changes the test sent, with exact decimals; customers change
type and facilities change status between payments, so a join with today's rows would give other figures.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from services.common.kafka import admin_client, topic_names
from services.common.replay import replay_topic
from services.common.settings import Settings, load_settings
from services.common.signals import Shutdown
from services.consumer.dlq import dlq_topic
from services.loader.wiring import run_loader
from services.stack.runtime import Stack
from services.transform.wiring import run_transform
from tests.fixtures.enricher import (
    EnricherProcess,
    Workload,
    output_messages,
    output_records,
    undecodable,
    unique_prefix,
)
from tests.fixtures.pipeline import WriterProcess, wait_for_log_event, wait_until_committed
from tests.fixtures.transform import pipeline_env

MART = "monthly_payments_by_customer_type_and_facility_status"
EPOCH = dt.date(1970, 1, 1)
MONTHS = (dt.date(2026, 10, 1), dt.date(2026, 11, 1), dt.date(2026, 12, 1))
NO_CUSTOMER = 99  # no change of this customer is ever sent: its payments join "missing"
Segment = tuple[dt.date, str, str | None, str | None]


@dataclass
class Ledger:
    """Every change the test sent, with its LSN: the independent side of the comparison."""

    customers: dict[int, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    facilities: dict[int, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    transactions: dict[int, tuple[int, str, dict[str, Any]]] = field(default_factory=dict)  # newest (lsn, op, row)
    events: int = 0

    @staticmethod
    def as_of(versions: list[tuple[int, str]], lsn: int) -> str | None:
        """The value of the version with the greatest LSN at or below ``lsn``."""
        older = [v for v in versions if v[0] <= lsn]
        return max(older)[1] if older else None

    def expected(self, *, today: bool = False) -> dict[Segment, tuple[int, Decimal, int]]:
        """Per (month, currency, customer type, facility status): payments, their sum, those not joined; with
        ``today``, joined with the newest customer and facility versions instead (what the mart must not do)."""
        found: dict[Segment, tuple[int, Decimal, int]] = {}
        for lsn, op, row in self.transactions.values():
            if op == "d" or row["transaction_type"] != "PAYMENT":
                continue
            at = 1 << 62 if today else lsn
            customer = self.as_of(self.customers[row["customer_id"]], at)
            facility = None if row["facility_id"] is None else self.as_of(self.facilities[row["facility_id"]], at)
            day = EPOCH + dt.timedelta(days=row["value_date"])
            segment = (day.replace(day=1), row["currency"], customer, facility)
            count, total, unjoined = found.get(segment, (0, Decimal(0), 0))
            missing = customer is None or facility is None
            found[segment] = (count + 1, total + Decimal(str(row["amount"])), unjoined + missing)
        return found


class Traffic:
    """Customers, facilities and transactions of a seeded mix, sent through the workload's producer."""

    def __init__(self, workload: Workload, seed: int = 17) -> None:
        self.workload = workload
        self.rng = random.Random(seed)
        self.ledger = Ledger()
        self.next_tx = 1

    def customer(self, customer_id: int, customer_type: str, op: str = "u") -> None:
        template = self.workload.templates["customers"]["after"]
        row = {**template, "customer_id": customer_id, "customer_type": customer_type, "status": "ACTIVE"}
        row["external_ref"] = f"00000000-0000-4000-8000-{customer_id:012d}"
        lsn = self.workload.send("customers", op, row)
        self.ledger.customers[customer_id].append((lsn, customer_type))

    def facility(self, facility_id: int, status: str) -> None:
        lsn = self.workload.facility(facility_id, status, "5.25")
        self.ledger.facilities[facility_id].append((lsn, status))

    def transaction(self, transaction_id: int, op: str, row: dict[str, Any]) -> None:
        lsn = self.workload.send("transactions", op, row)
        self.ledger.transactions[transaction_id] = (lsn, op, row)
        self.ledger.events += 1

    def new_transaction(self) -> None:
        template = self.workload.templates["transactions"]["after"]
        month = self.rng.choice(MONTHS)
        value_date = (month + dt.timedelta(days=self.rng.randint(0, 27)) - EPOCH).days
        customer = self.rng.choice([*range(1, 13), NO_CUSTOMER]) if self.rng.random() < 0.1 else self.rng.randint(1, 12)
        row = {
            **template,
            "transaction_id": self.next_tx,
            "customer_id": customer,
            "facility_id": None if self.rng.random() < 0.1 else self.rng.randint(1, 8),
            "transaction_type": "PAYMENT" if self.rng.random() < 0.7 else "DEPOSIT",
            "amount": float(f"{self.rng.randint(1, 10_000_000) / 100:.2f}"),  # a JSON number of two decimals
            "currency": self.rng.choice(["USD", "EUR"]),
            "value_date": value_date,
        }
        self.transaction(self.next_tx, "c", row)
        self.next_tx += 1

    def change_a_transaction(self) -> None:
        """An update of a live transaction's amount, or its delete: silver keeps its newest version."""
        live = [k for k, (_, op, _) in self.ledger.transactions.items() if op != "d"]
        key = self.rng.choice(live)
        _, _, row = self.ledger.transactions[key]
        if self.rng.random() < 0.3:
            self.transaction(key, "d", row)
        else:
            self.transaction(key, "u", {**row, "amount": float(f"{self.rng.randint(1, 99_999) / 100:.2f}")})

    def start(self) -> None:
        for n in range(1, 13):
            self.customer(n, "BUSINESS" if n % 2 else "INDIVIDUAL", op="r")
        for n in range(1, 9):
            self.facility(n, "ACTIVE")
        self.workload.heartbeat()

    def round(self) -> None:
        for _ in range(40):
            roll = self.rng.random()
            if roll < 0.6 or self.next_tx < 10:
                self.new_transaction()
            elif roll < 0.75:
                self.change_a_transaction()
            elif roll < 0.88:
                self.customer(self.rng.randint(1, 12), self.rng.choice(["BUSINESS", "INDIVIDUAL"]))
            else:
                self.facility(self.rng.randint(1, 8), self.rng.choice(["ACTIVE", "CLOSED", "DEFAULTED"]))
        self.workload.heartbeat()


def _land(settings: Settings, writer: WriterProcess) -> None:
    """Run the writer until it has committed every enriched record, then stop it.

    Not up to the topic's end offsets (tests/fixtures/transform.py's ``drain``): in a topic written in Kafka
    transactions the last offset of a partition is a commit marker, which no consumer commits past.
    """
    last: dict[tuple[str, int], int] = {}
    for message in output_messages(settings, settings.kafka.topic_prefix):
        tp = (str(message.topic()), int(message.partition() or 0))
        last[tp] = max(last.get(tp, 0), int(message.offset() or 0) + 1)
    proc = writer.start()
    try:
        wait_until_committed(settings, writer.group, last)
        wait_for_log_event(writer, proc, "writer.started")
    finally:
        assert writer.terminate(proc) == 0, writer.logs()[-3000:]


@pytest.fixture
def processes(settings: Settings, tmp_path: Path) -> Iterator[tuple[EnricherProcess, WriterProcess]]:
    prefix = unique_prefix("gold")
    for folder in ("enricher-logs", "writer-logs"):
        (tmp_path / folder).mkdir()
    enricher = EnricherProcess(
        prefix=prefix, group=f"{prefix}-enricher", state_dir=tmp_path / "store", log_dir=tmp_path / "enricher-logs"
    )
    writer = WriterProcess(group=f"{prefix}-writer", lake_root=tmp_path / "lake", log_dir=tmp_path / "writer-logs")
    writer.env_overrides["CDCFLOW_KAFKA__TOPIC_PREFIX"] = prefix
    yield enricher, writer
    enricher.stop_all()
    writer.stop_all()
    doomed = [f"{prefix}.", dlq_topic(enricher.group), dlq_topic(writer.group), replay_topic(writer.group)]
    admin = admin_client(settings.kafka)  # held until the deletions are done: a dropped client cancels them
    topics = [t for start in doomed for t in topic_names(settings.kafka, start)]
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        future.result()


def test_payments_by_segment_in_gold_equal_the_as_of_join(
    stack: Stack, settings: Settings, processes: tuple[EnricherProcess, WriterProcess], tmp_path: Path
) -> None:
    enricher, writer = processes
    traffic = Traffic(Workload(settings, enricher.prefix))
    traffic.start()
    proc = enricher.start()
    for _ in range(8):
        traffic.round()
    deadline = time.monotonic() + 120
    while len(records := output_records(settings, enricher.prefix)) < traffic.ledger.events:
        assert time.monotonic() < deadline, f"{len(records)} of {traffic.ledger.events}\n{enricher.logs()[-3000:]}"
        time.sleep(0.5)
    assert enricher.terminate(proc) == 0
    assert undecodable(settings, enricher.prefix) == []

    env = {
        **pipeline_env(writer, tmp_path),
        "CDCFLOW_KAFKA__TOPIC_PREFIX": enricher.prefix,
        "CDCFLOW_TRANSFORM__SELECT": f"+{MART}",  # the mart, silver.enriched__transactions and their tests
    }
    prefixed = load_settings({**env})
    _land(prefixed, writer)
    assert run_loader(prefixed, Shutdown(), once=True) == 0
    assert run_transform(prefixed, Shutdown(), once=True) == 0, "dbt build failed (logs above)"

    expected = traffic.ledger.expected()
    with duckdb.connect(str(prefixed.duckdb_path()), read_only=True) as db:
        rows = db.execute(
            "select value_month, currency, customer_type, facility_status, payment_count, paid_amount,"
            f" unjoined_payment_count from gold.{MART}"
        ).fetchall()
        (bronze,) = db.execute(
            "select count(distinct (_kafka_partition, _kafka_offset)) = count(*) and count(*) = ?"
            " from bronze.enriched__transactions",
            [len(records)],
        ).fetchone() or (False,)
        (live,) = db.execute("select count(*) from silver.enriched__transactions").fetchone() or (0,)
    found = {(r[0], r[1], r[2], r[3]): (r[4], r[5], r[6]) for r in rows}
    assert found == expected
    assert bronze, "bronze holds each enriched change exactly once"
    assert live == sum(op != "d" for _, op, _ in traffic.ledger.transactions.values())
    # what was tested: a join with today's customers and facilities gives other figures; payments of a
    # customer never seen and without a facility are in the mart, not lost
    assert found != traffic.ledger.expected(today=True)
    assert any(segment[2] is None for segment in found)
    assert any(segment[3] is None for segment in found)
