"""The delete events of ``cdcflow backfill deletes``, read back by the writer's own decoder (both readers): the key
of every type a key may have, generated values included, lands as the value silver held, with the LSN and time
of the lookup; the other columns are null, as in a default-identity delete."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from services.common.contracts import Column, TableContract
from services.common.debezium.json_batch import JsonEventDecoder
from services.common.kafka.message_columns import MessageBatch
from services.transform.deletes import DeleteError, delete_event, emit_deletes

KEY = (
    Column("k_int16", "int16", "smallint", nullable=False),
    Column("k_int32", "int32", "integer", nullable=False),
    Column("k_int64", "int64", "bigint", nullable=False),
    Column("k_bool", "boolean", "boolean", nullable=False),
    Column("k_float", "float64", "double precision", nullable=False),
    Column("k_decimal", "decimal", "numeric(30,4)", nullable=False, precision=30, scale=4),
    Column("k_number", "variable_decimal", "numeric", nullable=False),
    Column("k_text", "string", "text", nullable=False),
    Column("k_uuid", "uuid", "uuid", nullable=False),
    Column("k_date", "date", "date", nullable=False),
    Column("k_ts", "timestamp", "timestamp without time zone", nullable=False),
    Column("k_ts3", "timestamp_millis", "timestamp(3) without time zone", nullable=False),
    Column("k_tstz", "timestamptz", "timestamp with time zone", nullable=False),
    Column("k_time", "time", "time without time zone", nullable=False),
    Column("k_bytes", "bytes", "bytea", nullable=False),
)
CONTRACT = TableContract(
    schema="lending",
    table="ledger",
    primary_key=tuple(c.name for c in KEY),
    columns=(*KEY, Column("amount", "decimal", "numeric(12,2)", nullable=False, precision=12, scale=2)),
)
TOPIC = "cdcflow.lending.ledger"
LSN = 123_456_789_012
AT = dt.datetime(2026, 12, 6, 1, 2, 3, 456789, tzinfo=dt.UTC)


def _key(rng: random.Random) -> dict[str, Any]:
    """One key as DuckDB returns silver's values, with the edges of each type now and then."""
    text = "".join(
        rng.choice(['"', "\\", "\n", "é", "€", "𝄞", "\x01", "a", " ", "'"]) for _ in range(rng.randint(0, 12))
    )
    wall = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=rng.randint(-(2**55), 2**55))
    return {
        "k_int16": rng.choice([-(2**15), 2**15 - 1, rng.randint(-999, 999)]),
        "k_int32": rng.choice([-(2**31), 2**31 - 1, rng.randint(-(10**6), 10**6)]),
        "k_int64": rng.choice([-(2**63), 2**63 - 1, rng.randint(-(10**15), 10**15)]),
        "k_bool": rng.random() < 0.5,
        "k_float": rng.choice([0.0, -0.5, 1e-300, 1.7976931348623157e308, rng.uniform(-1e6, 1e6)]),
        "k_decimal": Decimal(rng.randint(-(10**30) + 1, 10**30 - 1)).scaleb(-4),
        "k_number": str(Decimal(rng.randint(-(10**38) + 1, 10**38 - 1)).scaleb(-rng.randint(0, 38))),
        "k_text": text,
        "k_uuid": uuid.UUID(int=rng.getrandbits(128)),
        "k_date": dt.date(1970, 1, 1) + dt.timedelta(days=rng.randint(-700_000, 2_000_000)),
        "k_ts": wall,
        "k_ts3": wall.replace(microsecond=wall.microsecond // 1000 * 1000),
        "k_tstz": wall.replace(tzinfo=dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=rng.randint(-12, 14)))),
        "k_time": dt.time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999_999)),
        "k_bytes": rng.randbytes(rng.randint(0, 40)),
    }


def _decoded(keys: list[dict[str, Any]], *, native_reader: bool) -> list[dict[str, Any]]:
    messages = []
    for offset, key in enumerate(keys):
        key_bytes, value = delete_event(
            CONTRACT, [key[c.name] for c in KEY], lsn=LSN, at=AT, prefix="cdcflow", database="lending"
        )
        assert list(json.loads(key_bytes)) == list(CONTRACT.primary_key)
        messages.append(
            Message(
                topic=TOPIC,
                partition=2,
                offset=offset,
                key=key_bytes,
                value=value,
                timestamp=(TIMESTAMP_CREATE_TIME, 1_795_387_781_000),
            )
        )
    decoder = JsonEventDecoder(CONTRACT, native_reader=native_reader)
    result = decoder.decode(TOPIC, MessageBatch.of(messages), ingested_at_us=1_795_387_790_000_000)
    assert result.failures == []
    rows: list[dict[str, Any]] = result.rows.to_pylist()
    return rows


def _as_lake_holds(column: Column, value: Any) -> Any:
    if column.semantic == "variable_decimal":
        return Decimal(value)
    if column.semantic == "uuid":
        return str(value)
    if column.semantic == "timestamptz":
        return value.astimezone(dt.UTC)
    return value


@pytest.mark.parametrize("native_reader", [True, False], ids=["native-reader", "arrow-reader"])
def test_a_delete_event_carries_silvers_key_of_every_type_back_to_the_lake(native_reader: bool) -> None:
    rng = random.Random(20261206)
    keys = [_key(rng) for _ in range(300)]
    rows = _decoded(keys, native_reader=native_reader)
    assert len(rows) == len(keys)
    for key, row in zip(keys, rows, strict=True):
        assert row["_op"] == "d"
        assert row["_source_lsn"] == LSN
        assert row["_source_ts"] == AT
        assert row["_is_snapshot"] is False
        assert row["amount"] is None
        for column in KEY:
            assert row[column.name] == _as_lake_holds(column, key[column.name]), column.name


@pytest.mark.parametrize(
    "column",
    [
        Column("doc", "json", "jsonb", nullable=False),
        Column("tags", "array", "text[]", items=Column("e", "string", "text")),
    ],
)
def test_a_key_no_delete_event_can_carry_is_refused(column: Column) -> None:
    contract = TableContract(schema="lending", table="odd", primary_key=(column.name,), columns=(column,))
    with pytest.raises(DeleteError, match="cannot carry a key column"):
        emit_deletes(None, [contract])  # type: ignore[arg-type]  # refused before any server is asked
