"""The enricher's output as a table like the captured ones: its contract, derived from its inputs', and its
envelopes, decoded by the lake writer's own decoder."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka import Message

from services.common.contracts import Column, ContractRegistry, load_contracts
from services.common.contracts.store import contract_to_avro
from services.common.debezium.json_batch import JsonEventDecoder
from services.common.kafka.message_columns import MessageBatch
from services.common.settings import WriterSettings, repo_root
from services.consumer.routing import Router
from services.enricher.contract import PRODUCED_BY, derive
from services.enricher.events import TransactionChange, decode_transaction
from services.enricher.join import Released, Side, encode, enriched_value, join_side
from services.enricher.store import Version
from services.transform.verify import verify

TOPIC = "cdcflow.enriched.transactions"
ROW = {
    "transaction_id": 9,
    "customer_id": 4,
    "facility_id": 2,
    "transaction_type": "PAYMENT",
    "amount": "AMOUNT",  # a JSON number in the event: see _change
    "currency": "USD",
    "exchange_rate": {"scale": 2, "value": "AQ=="},
    "booked_at": "2026-12-02T10:13:14.148217Z",
    "value_date": 20789,
    "reference": None,
}


def _contracts() -> list[Any]:
    return load_contracts(repo_root() / "schemas")


def _enriched() -> Any:
    return next(c for c in _contracts() if c.qualified_name == "enriched.transactions")


def test_the_contract_in_schemas_is_the_one_derived_from_its_inputs() -> None:
    """schemas/enriched.transactions.avsc is written by `cdcflow schemas generate`, never by hand."""
    written = _enriched()
    assert written == derive(_contracts())
    assert (written.produced_by, written.primary_key, written.source) == (PRODUCED_BY, ("transaction_id",), "")
    transactions = next(c for c in _contracts() if c.qualified_name == "lending.transactions")
    assert written.columns[: len(transactions.columns)] == transactions.columns
    rate = written.column("facility_interest_rate")
    assert (rate.semantic, rate.precision, rate.scale, rate.nullable) == ("decimal", 7, 4, True)


def test_a_column_added_to_transactions_is_a_new_version_of_the_output() -> None:
    contracts = _contracts()
    transactions = next(c for c in contracts if c.qualified_name == "lending.transactions")
    evolved = replace(transactions, columns=(*transactions.columns, Column("channel", "string", "text")), version=2)
    derived = derive([*(c for c in contracts if c is not transactions), evolved])
    assert derived is not None
    assert derived.version == _enriched().version + 1
    assert "channel" in [c.name for c in derived.columns]
    assert derive([c for c in contracts if c is not transactions]) is None  # an input without a contract


def _change(op: str, row: dict[str, Any], *, snapshot: str = "false") -> TransactionChange:
    image = {"before": row if op == "d" else None, "after": None if op == "d" else row}
    source = {"lsn": 137952288, "ts_ms": 1_796_206_394_149, "ts_us": 1_796_206_394_149_321, "txId": 33591}
    value = json.dumps({**image, "source": {**source, "snapshot": snapshot}, "op": op})
    value = value.replace('"AMOUNT"', "12345678901234567.89")  # beyond a double's digits, as the connector writes it
    change = decode_transaction("cdcflow.lending.transactions", 3, 41, b"{}", value.encode())
    assert isinstance(change, TransactionChange)
    return change


def _joined() -> tuple[Side, Side]:
    customer = join_side(
        lambda *_: Version(20, 900, False, {"customer_type": "BUSINESS", "status": "ACTIVE"}), "customers", "4", 30
    )
    facility = join_side(
        lambda *_: Version(25, 950, False, {"status": "ACTIVE", "interest_rate": "0.0725"}), "facilities", "2", 30
    )
    return customer, facility


def _decode(values: list[bytes], *, native: bool) -> Any:
    messages = [
        Message(topic=TOPIC, partition=0, offset=i, key=b"{}", value=v, timestamp=(1, 1_796_206_395_000))
        for i, v in enumerate(values)
    ]
    return JsonEventDecoder(_enriched(), native_reader=native).decode(TOPIC, MessageBatch.of(messages), 0)


@pytest.mark.parametrize("native", [True, False])
def test_the_writer_decodes_an_enriched_change_exactly(native: bool) -> None:
    """On both of the writer's paths: every column, the op, the transaction's LSN, commit time and txId."""
    customer, facility = _joined()
    record = enriched_value(Released(_change("c", ROW), "watermark"), customer, facility)
    assert set(record["after"]) == {c.name for c in _enriched().columns}  # the row image is the contract's row
    result = _decode([encode(record)], native=native)
    assert result.failures == []
    (row,) = result.rows.to_pylist()
    assert row["amount"] == Decimal("12345678901234567.89")  # text end to end: no float on the way
    assert (row["customer_type"], row["customer_status"], row["customer_lsn"]) == ("BUSINESS", "ACTIVE", 20)
    assert (row["facility_status"], row["facility_interest_rate"]) == ("ACTIVE", Decimal("0.0725"))
    assert (row["source_topic"], row["source_partition"], row["source_offset"]) == (
        "cdcflow.lending.transactions",
        3,
        41,
    )
    assert (row["_op"], row["_source_lsn"], row["_source_txid"], row["_is_snapshot"]) == ("c", 137952288, 33591, False)
    assert row["_source_ts"] == dt.datetime(2026, 12, 2, 10, 13, 14, 149321, tzinfo=dt.UTC)


@pytest.mark.parametrize("native", [True, False])
def test_a_deleted_or_snapshot_transaction_lands_as_such(native: bool) -> None:
    deleted = enriched_value(Released(_change("d", ROW), "timeout"), Side("none"), Side("expired"))
    read = enriched_value(Released(_change("r", ROW, snapshot="true"), "watermark"), *_joined())
    result = _decode([encode(deleted), encode(read)], native=native)
    assert result.failures == []
    first, second = result.rows.to_pylist()
    assert (first["_op"], first["transaction_id"], first["released_by"]) == ("d", 9, "timeout")
    assert (first["customer_join"], first["facility_join"], first["customer_type"]) == ("none", "expired", None)
    assert (second["_op"], second["_is_snapshot"]) == ("r", True)


@pytest.mark.parametrize("native", [True, False])
def test_a_truncate_of_transactions_lands_as_a_truncate(native: bool) -> None:
    """Debezium's TRUNCATE event (no row image, a null key) goes out as one, with its LSN and commit time."""
    source = {"lsn": 137952400, "ts_ms": 1_796_206_394_200, "txId": 33592, "snapshot": "false", "table": "transactions"}
    value = json.dumps({"before": None, "after": None, "source": source, "op": "t", "ts_ms": 1_796_206_394_300})
    change = decode_transaction("cdcflow.lending.transactions", 1, 77, None, value.encode())
    assert isinstance(change, TransactionChange)
    assert (change.op, change.customer_key, change.facility_key) == ("t", None, None)
    record = enriched_value(Released(change, "watermark"), Side("none"), Side("none"))
    assert (record["before"], record["after"], record["op"]) == (None, None, "t")
    message = Message(topic=TOPIC, partition=0, offset=0, key=None, value=encode(record), timestamp=(1, 1))
    result = JsonEventDecoder(_enriched(), native_reader=native).decode(TOPIC, MessageBatch.of([message]), 0)
    assert result.failures == []
    (row,) = result.rows.to_pylist()
    assert (row["_op"], row["_source_lsn"], row["transaction_id"]) == ("t", 137952400, None)
    assert row["_source_ts"] == dt.datetime(2026, 12, 2, 10, 13, 14, 200000, tzinfo=dt.UTC)


def test_the_writer_routes_the_enriched_topic_by_default() -> None:
    router = Router("cdcflow", ContractRegistry.of(_contracts()), WriterSettings().exclude_tables, 1 << 20)
    route = router.route(TOPIC)
    assert not route.skip
    assert route.decoder is not None
    assert route.decoder.contract.qualified_name == "enriched.transactions"


def test_verify_leaves_a_produced_table_out() -> None:
    class NoReader:
        def exists(self, contract: Any) -> bool:
            raise AssertionError("a produced table has no source table to read")

        def columns(self, contract: Any) -> frozenset[str]:
            raise AssertionError("a produced table has no source table to read")

    report = verify([_enriched()], NoReader(), NoReader())  # type: ignore[arg-type]
    assert report.tables == []
    assert "cdcflow.produced_by" in contract_to_avro(_enriched())
