"""Debezium Avro events (Confluent wire format and single-object encoding) into the lake schema.

Events are encoded with fastavro against the envelope schema derived from the contract, wrapped in real
``confluent_kafka.Message`` objects; the Confluent framing reads its writer schemas from a real HTTP
server on 127.0.0.1 speaking the schema-registry API, through the real httpx client.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from services.common.contracts import Column, ContractRegistry, TableContract, lake_schema
from services.common.debezium import UNAVAILABLE_VALUE
from services.common.debezium.avro import (
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_MARKER,
    AvroEventDecoder,
    ConfluentFraming,
    PoisonRecordError,
)
from services.common.debezium.avro_schema import EnvelopeSchema, envelope_schema, schema_fingerprint
from services.common.debezium.json_batch import JsonEventDecoder
from services.common.debezium.records import DecodeResult, Reason
from services.common.debezium.registry import RegistryUnavailableError, SchemaRegistryClient, UnknownSchemaError
from services.common.errors import ConfigError, TransientError
from services.common.kafka.message_columns import MessageBatch
from services.common.settings import load_settings
from services.consumer.routing import Router
from tests.fixtures.schema_registry import SchemaRegistry, serve_registry

TOPIC = "cdcflow.lending.accounts"
SCHEMA_ID = 7
CONTRACT = TableContract(
    schema="lending",
    table="accounts",
    primary_key=("account_id",),
    columns=(
        Column("account_id", "int64", "bigint", nullable=False),
        Column("balance", "decimal", "numeric(20,2)", precision=20, scale=2),
        Column("rate", "variable_decimal", "numeric"),
        Column("opened_on", "date", "date"),
        Column("reviewed_at", "timestamp", "timestamp without time zone"),
        Column("created_at", "timestamptz", "timestamp with time zone"),
        Column("cutoff", "time", "time without time zone"),
        Column("notes", "string", "text"),
        Column("profile", "json", "jsonb"),
        Column("ref", "uuid", "uuid"),
        Column("blob", "bytes", "bytea"),
        Column("tags", "array", "text[]", items=Column("element", "string", "text")),
        Column(
            "limits", "array", "numeric(10,2)[]", items=Column("element", "decimal", "numeric", precision=10, scale=2)
        ),
        Column("seen_at", "array", "timestamptz[]", items=Column("element", "timestamptz", "timestamptz")),
        Column("active", "boolean", "boolean"),
        Column("score", "int16", "smallint"),
        Column("visits", "int32", "integer"),
        Column("weight", "float32", "real"),
        Column("ratio", "float64", "double precision"),
    ),
)
ENVELOPE = EnvelopeSchema.of(CONTRACT)


# --- events -------------------------------------------------------------------------------------


def _vsd(value: str) -> dict[str, Any]:
    """Debezium's VariableScaleDecimal as Avro carries it: the unscaled value as raw bytes."""
    sign, digits, exponent = Decimal(value).as_tuple()
    assert isinstance(exponent, int)
    unscaled = int("".join(map(str, digits))) * (-1 if sign else 1)
    return {"scale": -exponent, "value": unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)}


def _row(account_id: int | None, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "account_id": account_id,
        "balance": Decimal("12345678901234567.89"),
        "rate": _vsd("0.000123456789"),
        "opened_on": 20_486,
        "reviewed_at": 1_777_975_872_123_456,
        "created_at": "2026-05-06T05:08:09.654321Z",
        "cutoff": 61_200_000_000,
        "notes": "hello",
        "profile": '{"tier": "gold"}',
        "ref": "c8db6e24-be26-4bfa-8d78-99bc5d85c678",
        "blob": b"\x00\x01\xff",
        "tags": ["a", None, "b"],
        "limits": [Decimal("10.50"), Decimal("-0.01")],
        "seen_at": ["2026-01-02T03:04:05Z"],
        "active": True,
        "score": 42,
        "visits": 70_000,
        "weight": 1.5,
        "ratio": 0.125,
    }
    row.update(overrides)
    return row


def _event(
    op: str, *, before: dict[str, Any] | None = None, after: dict[str, Any] | None = None, snapshot: str = "false"
) -> dict[str, Any]:
    source = {
        "version": "3.1.0.Final",
        "connector": "postgresql",
        "name": "cdcflow",
        "ts_ms": 1_795_387_780_402,
        "snapshot": snapshot,
        "db": "lending",
        "sequence": '["26503600","26503728"]',
        "ts_us": 1_795_387_780_402_545,
        "ts_ns": 1_795_387_780_402_545_000,
        "schema": "lending",
        "table": "accounts",
        "txId": 731,
        "lsn": 26_503_728,
        "xmin": None,
    }
    return {"before": before, "after": after, "source": source, "transaction": None, "op": op, "ts_ms": 1}


def _avro(event: dict[str, Any], schema: dict[str, Any] = ENVELOPE.parsed) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, event)
    return out.getvalue()


def _parsed(schema: dict[str, Any]) -> dict[str, Any]:
    parsed = fastavro.parse_schema(schema)
    assert isinstance(parsed, dict)
    return parsed


def _confluent(event: dict[str, Any], schema_id: int = SCHEMA_ID, schema: dict[str, Any] = ENVELOPE.parsed) -> bytes:
    return CONFLUENT_MAGIC + schema_id.to_bytes(4, "big") + _avro(event, schema)


def _single(event: dict[str, Any], envelope: EnvelopeSchema = ENVELOPE) -> bytes:
    return SINGLE_OBJECT_MARKER + envelope.fingerprint + _avro(event, envelope.parsed)


def _messages(values: list[bytes | None], first_offset: int = 100, partition: int = 3) -> list[Message]:
    return [
        Message(
            topic=TOPIC,
            partition=partition,
            offset=first_offset + i,
            key=b"\x00\x00\x00\x00\x08\x02",
            value=value,
            headers=[("trace", b"1")],
            timestamp=(TIMESTAMP_CREATE_TIME, 1_795_387_781_000),
        )
        for i, value in enumerate(values)
    ]


# --- a schema registry on 127.0.0.1 -------------------------------------------------------------


@pytest.fixture
def registry() -> Iterator[SchemaRegistry]:
    with serve_registry(SchemaRegistry(schemas={SCHEMA_ID: ENVELOPE.schema})) as served:
        yield served


@pytest.fixture
def client(registry: SchemaRegistry) -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient(registry.url, timeout_s=5.0) as client:
        yield client


def _decode_confluent(client: SchemaRegistryClient, values: list[bytes | None], **kwargs: Any) -> DecodeResult:
    decoder = AvroEventDecoder.confluent(CONTRACT, client, **kwargs)
    return decoder.decode(TOPIC, MessageBatch.of(_messages(values)), ingested_at_us=1_795_387_790_000_000)


def _decode_single(values: list[bytes | None], contract: TableContract = CONTRACT) -> DecodeResult:
    decoder = AvroEventDecoder.single_object(contract)
    return decoder.decode(TOPIC, MessageBatch.of(_messages(values)), ingested_at_us=1_795_387_790_000_000)


FRAMINGS = ["confluent", "single-object"]


def _decode(framing: str, client: SchemaRegistryClient, events: list[dict[str, Any] | None]) -> DecodeResult:
    if framing == "confluent":
        return _decode_confluent(client, [None if e is None else _confluent(e) for e in events])
    return _decode_single([None if e is None else _single(e) for e in events])


# --- the derived envelope schema ------------------------------------------------------------------


def test_envelope_schema_uses_debeziums_avro_encodings() -> None:
    schema = envelope_schema(CONTRACT)
    assert schema["name"] == "Envelope"
    assert schema["namespace"] == "cdcflow.lending.accounts"
    fields = {f["name"]: f["type"] for f in schema["fields"]}
    assert fields["op"] == "string"
    assert fields["ts_ms"] == ["null", "long"]
    assert fields["source"]["name"] == "Source"
    value = fields["before"][1]
    assert (fields["before"][0], fields["after"]) == ("null", ["null", "cdcflow.lending.accounts.Value"])
    columns = {f["name"]: f["type"] for f in value["fields"]}
    assert columns["account_id"] == "long"  # NOT NULL: no union
    balance = columns["balance"][1]
    assert (balance["type"], balance["logicalType"], balance["precision"], balance["scale"]) == (
        "bytes",
        "decimal",
        20,
        2,
    )
    rate = columns["rate"][1]
    assert rate["connect.name"] == "io.debezium.data.VariableScaleDecimal"
    assert rate["fields"] == [{"name": "scale", "type": "int"}, {"name": "value", "type": "bytes"}]
    expected = {
        "opened_on": ("int", "io.debezium.time.Date"),
        "reviewed_at": ("long", "io.debezium.time.MicroTimestamp"),
        "created_at": ("string", "io.debezium.time.ZonedTimestamp"),
        "cutoff": ("long", "io.debezium.time.MicroTime"),
        "profile": ("string", "io.debezium.data.Json"),
        "ref": ("string", "io.debezium.data.Uuid"),
    }
    for name, (avro_type, connect_name) in expected.items():
        assert (columns[name][1]["type"], columns[name][1]["connect.name"]) == (avro_type, connect_name)
    assert columns["blob"] == ["null", "bytes"]
    assert columns["tags"] == ["null", {"type": "array", "items": ["null", "string"]}]


def test_fingerprint_is_the_avro_crc64_of_the_canonical_form() -> None:
    # The Avro specification's test vector: "int" → 0x7275d51a3f395c8f, sent little-endian
    assert schema_fingerprint({"type": "int"}) == (8247732601305521295).to_bytes(8, "little")
    assert ENVELOPE.fingerprint == schema_fingerprint(envelope_schema(CONTRACT))
    assert len(ENVELOPE.fingerprint) == 8
    renamed = EnvelopeSchema.of(CONTRACT, topic_prefix="other-prefix")
    assert renamed.fingerprint != ENVELOPE.fingerprint  # names are part of the canonical form
    assert renamed.schema["namespace"] == "other_prefix.lending.accounts"


# --- decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", FRAMINGS)
def test_every_type_decodes_exactly(framing: str, client: SchemaRegistryClient) -> None:
    result = _decode(framing, client, [_event("c", after=_row(1))])
    assert result.failures == []
    assert result.rows.schema.equals(lake_schema(CONTRACT), check_metadata=True)
    (row,) = result.rows.to_pylist()
    assert row["account_id"] == 1
    assert row["balance"] == Decimal("12345678901234567.89")
    assert row["rate"] == Decimal("0.000123456789")
    assert row["opened_on"] == date(2026, 2, 2)
    assert row["reviewed_at"] == datetime(2026, 5, 5, 10, 11, 12, 123456)
    assert row["created_at"] == datetime(2026, 5, 6, 5, 8, 9, 654321, tzinfo=UTC)
    assert row["cutoff"] == time(17, 0)
    assert row["notes"] == "hello"
    assert row["profile"] == '{"tier": "gold"}'
    assert row["ref"] == "c8db6e24-be26-4bfa-8d78-99bc5d85c678"
    assert row["blob"] == b"\x00\x01\xff"
    assert row["tags"] == ["a", None, "b"]
    assert row["limits"] == [Decimal("10.50"), Decimal("-0.01")]
    assert row["seen_at"] == [datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)]
    assert (row["active"], row["score"], row["visits"], row["weight"], row["ratio"]) == (True, 42, 70_000, 1.5, 0.125)
    assert row["_op"] == "c"
    assert row["_source_lsn"] == 26_503_728
    assert row["_source_txid"] == 731
    assert row["_source_ts"] == datetime(2026, 11, 22, 22, 49, 40, 402545, tzinfo=UTC)
    assert row["_is_snapshot"] is False
    assert row["_unavailable_columns"] == []
    assert (row["_kafka_topic"], row["_kafka_partition"], row["_kafka_offset"]) == (TOPIC, 3, 100)
    assert row["_kafka_timestamp"] == datetime(2026, 11, 22, 22, 49, 41, tzinfo=UTC)
    assert row["_ingested_at"] == datetime(2026, 11, 22, 22, 49, 50, tzinfo=UTC)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_the_same_rows_as_the_json_decoder(framing: str, client: SchemaRegistryClient) -> None:
    """Both decoders end in the same converter: identical lake rows for the same change."""
    event = _event("u", after=_row(5, notes=None, tags=[]))
    avro_rows = _decode(framing, client, [event]).rows
    wire = copy.deepcopy(event)
    wire["after"].update(
        balance="12345678901234567.89",  # quoted here, unquoted below: JSON numbers keep every digit
        rate={"scale": 12, "value": base64.b64encode(_vsd("0.000123456789")["value"]).decode()},
        blob="AAH/",
        limits=["10.50", "-0.01"],
    )
    text = json.dumps(wire).replace('"12345678901234567.89"', "12345678901234567.89")
    text = text.replace('["10.50", "-0.01"]', "[10.50, -0.01]")
    json_rows = (
        JsonEventDecoder(CONTRACT)
        .decode(TOPIC, MessageBatch.of(_messages([text.encode()])), 1_795_387_790_000_000)
        .rows
    )
    assert avro_rows.to_pylist() == json_rows.to_pylist()


@pytest.mark.parametrize("framing", FRAMINGS)
def test_ops_images_tombstones_and_truncate(framing: str, client: SchemaRegistryClient) -> None:
    result = _decode(
        framing,
        client,
        [
            _event("r", after=_row(1), snapshot="true"),
            _event("c", after=_row(2)),
            _event("u", before=None, after=_row(1, notes="changed")),
            _event("d", before=_row(1, notes="last"), after=None),
            None,  # the tombstone after a delete
            _event("t"),
        ],
    )
    assert result.failures == []
    assert result.tombstones == 1
    rows = result.rows.to_pylist()
    assert [r["_op"] for r in rows] == ["r", "c", "u", "d", "t"]
    assert [r["_kafka_offset"] for r in rows] == [100, 101, 102, 103, 105]
    assert [r["_is_snapshot"] for r in rows] == [True, False, False, False, False]
    assert rows[2]["notes"] == "changed"
    assert rows[3]["account_id"] == 1  # a delete carries its before image: the key ...
    assert rows[3]["notes"] is None  # ... and, without REPLICA IDENTITY FULL, nothing else is real data
    assert rows[3]["balance"] is None
    assert rows[4]["account_id"] is None  # a truncate has no row image


def test_full_replica_identity_keeps_the_whole_before_image() -> None:
    contract = replace(CONTRACT, replica_identity="full")
    result = _decode_single([_single(_event("d", before=_row(1, notes="last")))], contract)
    (row,) = result.rows.to_pylist()
    assert (row["notes"], row["balance"], row["blob"]) == ("last", Decimal("12345678901234567.89"), b"\x00\x01\xff")


@pytest.mark.parametrize("framing", FRAMINGS)
def test_toast_placeholder_becomes_null_and_is_listed(framing: str, client: SchemaRegistryClient) -> None:
    result = _decode(
        framing,
        client,
        [
            _event("u", after=_row(1, notes=UNAVAILABLE_VALUE, blob=UNAVAILABLE_VALUE.encode())),
            _event("u", after=_row(2, tags=[UNAVAILABLE_VALUE], profile=UNAVAILABLE_VALUE)),
            _event("u", after=_row(3)),
        ],
    )
    assert result.failures == []
    first, second, third = result.rows.to_pylist()
    assert (first["notes"], first["blob"]) == (None, None)
    assert first["_unavailable_columns"] == ["notes", "blob"]
    assert (second["tags"], second["profile"]) == (None, None)
    assert sorted(second["_unavailable_columns"]) == ["profile", "tags"]
    assert third["_unavailable_columns"] == []
    assert third["notes"] == "hello"
    assert UNAVAILABLE_VALUE not in json.dumps(result.rows.to_pylist(), default=str)


GOOD = _event("c", after=_row(7))


def _null_key_schema() -> dict[str, Any]:
    """The envelope with a nullable key: a NOT NULL key that is null cannot be written otherwise."""
    schema = envelope_schema(CONTRACT)
    schema["fields"][0]["type"][1]["fields"][0] = {"name": "account_id", "type": ["null", "long"], "default": None}
    return schema


def _wide_balance_schema() -> dict[str, Any]:
    """The envelope after balance became numeric(38,2) in PostgreSQL, before the contract followed."""
    schema = envelope_schema(CONTRACT)
    balance = schema["fields"][0]["type"][1]["fields"][1]["type"][1]
    balance["precision"] = 38
    return schema


NULL_KEY_ID, NULL_KEY = 8, _null_key_schema()
WIDE_ID, WIDE = 9, _wide_balance_schema()
CONFLUENT_POISON: list[tuple[str, str, bytes]] = [
    ("truncated", Reason.MALFORMED_AVRO, _confluent(GOOD)[:40]),
    ("trailing-bytes", Reason.MALFORMED_AVRO, _confluent(GOOD) + b"\x00\x00"),
    ("wrong-magic", Reason.MALFORMED_AVRO, b"\x01" + _confluent(GOOD)[1:]),
    ("json-value", Reason.MALFORMED_AVRO, b'{"op":"c"}'),
    ("empty-value", Reason.MALFORMED_AVRO, b""),
    ("header-only", Reason.MALFORMED_AVRO, CONFLUENT_MAGIC + b"\x00\x00"),
    ("unknown-id", Reason.UNKNOWN_SCHEMA, _confluent(GOOD, schema_id=99)),
    ("bad-union-index", Reason.MALFORMED_AVRO, _confluent(GOOD)[:5] + b"\x09" + _confluent(GOOD)[6:]),
    ("invalid-utf8", Reason.INVALID_UTF8, _confluent(GOOD).replace(b"hello", b"\xff\xfe\xfd\xfc\xfb")),
    (
        "decimal-overflow",
        Reason.DECIMAL_OVERFLOW,
        _confluent(_event("c", after=_row(7, balance=Decimal("1" * 30))), WIDE_ID, WIDE),
    ),
    ("int16-overflow", Reason.WRONG_TYPE, _confluent(_event("c", after=_row(7, score=70_000)))),
    ("bad-zoned-timestamp", Reason.WRONG_TYPE, _confluent(_event("c", after=_row(7, created_at="yesterday")))),
    ("missing-key", Reason.MISSING_KEY, _confluent(_event("c", after=_row(None)), NULL_KEY_ID, NULL_KEY)),
    ("unknown-op", Reason.UNKNOWN_OP, _confluent(_event("x", after=_row(7)))),
    ("missing-image", Reason.MISSING_IMAGE, _confluent(_event("c", after=None))),
]


@pytest.mark.parametrize(("reason", "value"), [p[1:] for p in CONFLUENT_POISON], ids=[p[0] for p in CONFLUENT_POISON])
def test_poison_is_isolated_between_good_records(
    reason: str, value: bytes, registry: SchemaRegistry, client: SchemaRegistryClient
) -> None:
    registry.schemas.update({NULL_KEY_ID: NULL_KEY, WIDE_ID: WIDE})
    values: list[bytes | None] = [_confluent(_event("c", after=_row(i))) for i in range(1, 40)]
    values.insert(17, value)
    result = _decode_confluent(client, values)
    assert [(f.reason, f.message.offset()) for f in result.failures] == [(reason, 117)]
    failure = result.failures[0]
    assert failure.message.value() == value  # the raw record is kept for the DLQ
    assert failure.message.headers() == [("trace", b"1")]
    assert result.rows.column("_kafka_offset").to_pylist() == [o for o in range(100, 140) if o != 117]
    assert result.rows.column("account_id").to_pylist() == list(range(1, 40))


def test_a_batch_of_several_partitions_keeps_each_partitions_rows_in_offset_order() -> None:
    # the same offsets in both partitions, and a value Arrow refuses in each, so the batch is bisected
    first: list[bytes | None] = [_single(_event("c", after=_row(i))) for i in range(1, 13)]
    second: list[bytes | None] = [_single(_event("c", after=_row(i))) for i in range(101, 109)]
    first[9] = _single(_event("c", after=_row(10, score=70_000)))
    second[2] = _single(_event("c", after=_row(103, created_at="yesterday")))
    messages = _messages(second, partition=6) + _messages(first, partition=2)
    result = AvroEventDecoder.single_object(CONTRACT).decode(TOPIC, MessageBatch.of(messages), ingested_at_us=0)
    assert [(f.message.partition(), f.message.offset(), f.reason) for f in result.failures] == [
        (2, 109, Reason.WRONG_TYPE),
        (6, 102, Reason.WRONG_TYPE),
    ]
    split = result.rows_by_partition()
    assert split[2].column("_kafka_offset").to_pylist() == [o for o in range(100, 112) if o != 109]
    assert split[2].column("account_id").to_pylist() == [i for i in range(1, 13) if i != 10]
    assert split[6].column("_kafka_offset").to_pylist() == [o for o in range(100, 108) if o != 102]
    assert split[6].column("_kafka_partition").to_pylist() == [6] * 7


def test_unknown_fingerprint_and_foreign_framing_are_isolated() -> None:
    other = EnvelopeSchema.of(replace(CONTRACT, table="elsewhere"))
    values: list[bytes | None] = [_single(_event("c", after=_row(i))) for i in range(10)]
    values[3] = _single(_event("c", after=_row(3)), other)  # a fingerprint no contract of this table has
    values[6] = _confluent(_event("c", after=_row(6)))  # the other framing
    values[8] = _single(_event("c", after=_row(8)))[:-3]  # truncated
    result = _decode_single(values)
    assert [(f.reason, f.message.offset()) for f in result.failures] == [
        (Reason.UNKNOWN_SCHEMA, 103),
        (Reason.MALFORMED_AVRO, 106),
        (Reason.MALFORMED_AVRO, 108),
    ]
    assert other.fingerprint.hex() in result.failures[0].detail
    assert result.rows.column("account_id").to_pylist() == [0, 1, 2, 4, 5, 7, 9]


def test_many_poison_records_and_empty_input(client: SchemaRegistryClient) -> None:
    values: list[bytes | None] = [
        b"garbage" if i % 7 == 0 else _confluent(_event("c", after=_row(i))) for i in range(200)
    ]
    result = _decode_confluent(client, values)
    assert len(result.failures) == len(range(0, 200, 7))
    assert {f.reason for f in result.failures} == {Reason.MALFORMED_AVRO}
    assert result.rows.num_rows + len(result.failures) == 200
    empty = _decode_confluent(client, [])
    assert empty.rows.num_rows == 0
    assert empty.rows.schema.equals(lake_schema(CONTRACT))
    assert (empty.failures, empty.tombstones) == ([], 0)


def test_oversized_values_are_refused_without_reading(client: SchemaRegistryClient) -> None:
    big = _confluent(_event("c", after=_row(5, notes="x" * 5_000)))
    result = _decode_confluent(client, [_confluent(_event("c", after=_row(4))), big], max_value_bytes=4_096)
    assert [(f.reason, f.message.offset(), f.error_class) for f in result.failures] == [
        (Reason.OVERSIZED, 101, "OversizedRecord")
    ]
    assert result.rows.num_rows == 1


def test_writer_schema_variants_from_the_registry(registry: SchemaRegistry, client: SchemaRegistryClient) -> None:
    """What the shipped connector config sends (bytea as base64 text, timestamp(3) in milliseconds) and a
    column the contract does not know yet, which is reported like the JSON decoder reports it."""
    variant = envelope_schema(CONTRACT)
    value = variant["fields"][0]["type"][1]
    types = {f["name"]: f for f in value["fields"]}
    types["blob"]["type"] = ["null", "string"]
    types["reviewed_at"]["type"] = ["null", {"type": "long", "connect.name": "io.debezium.time.Timestamp"}]
    value["fields"].append({"name": "surprise", "type": ["null", "int"], "default": None})
    registry.schemas[21] = variant
    parsed = _parsed(variant)
    values: list[bytes | None] = [
        _confluent(_event("c", after=_row(1, blob="AAH/", reviewed_at=1_777_975_872_123, surprise=None)), 21, parsed),
        _confluent(_event("c", after=_row(2, blob="AAH/", surprise=5)), 21, parsed),
    ]
    result = _decode_confluent(client, values)
    (row,) = result.rows.to_pylist()
    assert row["blob"] == b"\x00\x01\xff"
    assert row["reviewed_at"] == datetime(2026, 5, 5, 10, 11, 12, 123000)
    assert [(f.reason, f.column, f.message.offset()) for f in result.failures] == [
        (Reason.SCHEMA_MISMATCH, "surprise", 101)
    ]
    assert result.unknown_columns() == {"surprise"}


def test_writer_schemas_with_avro_logical_types(registry: SchemaRegistry, client: SchemaRegistryClient) -> None:
    """``time.precision.mode=connect`` and friends: fastavro hands out dates, datetimes and UUIDs."""
    variant = envelope_schema(CONTRACT)
    value = variant["fields"][0]["type"][1]
    logical = {
        "opened_on": {"type": "int", "logicalType": "date"},
        "reviewed_at": {"type": "long", "logicalType": "timestamp-millis"},
        "created_at": {"type": "long", "logicalType": "timestamp-micros"},
        "cutoff": {"type": "int", "logicalType": "time-millis"},
        "ref": {"type": "string", "logicalType": "uuid"},
    }
    for column in value["fields"]:
        if column["name"] in logical:
            column["type"] = ["null", logical[column["name"]]]
    registry.schemas[22] = variant
    event = _event(
        "c",
        after=_row(
            1,
            opened_on=date(2026, 2, 2),
            reviewed_at=datetime(2026, 5, 5, 10, 11, 12, 123000, tzinfo=UTC),
            created_at=datetime(2026, 5, 6, 5, 8, 9, 654321, tzinfo=UTC),
            cutoff=time(17, 0, 1, 500_000),
        ),
    )
    (row,) = _decode_confluent(client, [_confluent(event, 22, _parsed(variant))]).rows.to_pylist()
    assert row["opened_on"] == date(2026, 2, 2)
    assert row["reviewed_at"] == datetime(2026, 5, 5, 10, 11, 12, 123000)
    assert row["created_at"] == datetime(2026, 5, 6, 5, 8, 9, 654321, tzinfo=UTC)
    assert row["cutoff"] == time(17, 0, 1, 500_000)
    assert row["ref"] == "c8db6e24-be26-4bfa-8d78-99bc5d85c678"


# --- the registry -------------------------------------------------------------------------------


def test_writer_schemas_are_fetched_once_per_id(registry: SchemaRegistry, client: SchemaRegistryClient) -> None:
    decoder = AvroEventDecoder.confluent(CONTRACT, client)
    other = AvroEventDecoder.confluent(replace(CONTRACT, table="accounts_copy"), client)
    good: list[bytes | None] = [_confluent(_event("c", after=_row(i))) for i in range(50)]
    unknown = _confluent(GOOD, schema_id=404)
    for batch in range(3):
        messages = _messages([*good, unknown, unknown], first_offset=batch * 100)
        result = decoder.decode(TOPIC, MessageBatch.of(messages), ingested_at_us=0)
        assert result.row_count == 50
        assert [f.reason for f in result.failures] == [Reason.UNKNOWN_SCHEMA] * 2
    other.decode(TOPIC, MessageBatch.of(_messages(good)), ingested_at_us=0)
    assert registry.hits[SCHEMA_ID] == 1  # shared by every decoder of the client
    assert registry.hits[404] == 3  # an unknown id is asked once per batch, not per record


NOTIFICATION = {
    "type": "record",
    "name": "Notification",
    "namespace": "io.debezium.connector.postgresql",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "aggregate_type", "type": "string"},
        {"name": "type", "type": "string"},
        {"name": "additional_data", "type": ["null", {"type": "map", "values": "string"}], "default": None},
        {"name": "timestamp", "type": ["null", "long"], "default": None},
    ],
}


def test_a_record_that_is_no_change_event_is_read_as_its_writer_schema_says(
    registry: SchemaRegistry, client: SchemaRegistryClient
) -> None:
    registry.schemas[50] = NOTIFICATION
    note = {"id": "n1", "aggregate_type": "Incremental Snapshot", "type": "COMPLETED", "additional_data": {"a": "b"},
            "timestamp": 1_795_387_780_402}  # fmt: skip
    framing = ConfluentFraming(client)
    assert framing.read(_confluent(note, 50, _parsed(NOTIFICATION))) == note
    with pytest.raises(PoisonRecordError, match="not Confluent wire format"):
        framing.read(b'{"id": "n1"}')
    with pytest.raises(PoisonRecordError, match="does not read with its writer schema"):
        framing.read(CONFLUENT_MAGIC + (50).to_bytes(4, "big") + b"\x02")  # a string's length, then nothing
    with pytest.raises(UnknownSchemaError):
        framing.read(_confluent(note, 51, _parsed(NOTIFICATION)))


def test_the_cache_is_bounded(registry: SchemaRegistry) -> None:
    for schema_id in (1, 2, 3):
        registry.schemas[schema_id] = ENVELOPE.schema
    with SchemaRegistryClient(registry.url, cache_size=2) as small:
        for schema_id in (1, 2, 1, 3, 1, 2):
            assert small.schema(schema_id)["name"] == "cdcflow.lending.accounts.Envelope"
    assert dict(registry.hits) == {1: 1, 2: 2, 3: 1}  # 2 was the least recently used when 3 came


def test_unknown_and_invalid_schemas_are_terminal(registry: SchemaRegistry, client: SchemaRegistryClient) -> None:
    registry.schemas[30] = {"type": "record", "name": "x", "fields": [{"name": "a", "type": "no-such-type"}]}
    with pytest.raises(UnknownSchemaError, match="schema id 99 is not in the registry"):
        client.schema(99)
    with pytest.raises(UnknownSchemaError, match="not a valid Avro schema"):
        client.schema(30)


def test_a_schema_nested_beyond_the_parsers_reach_is_terminal(
    registry: SchemaRegistry, client: SchemaRegistryClient
) -> None:
    registry.schemas[40] = "[" * 100_000 + "]" * 100_000  # served as the schema's text
    with pytest.raises(UnknownSchemaError, match="schema id 40 is not a valid Avro schema"):
        client.schema(40)


def test_a_registry_outage_is_transient_and_loses_nothing(
    registry: SchemaRegistry, client: SchemaRegistryClient
) -> None:
    decoder = AvroEventDecoder.confluent(CONTRACT, client)
    messages = _messages([_confluent(_event("c", after=_row(i))) for i in range(5)])
    registry.outage = True
    with pytest.raises(RegistryUnavailableError, match="HTTP 503") as caught:
        decoder.decode(TOPIC, MessageBatch.of(messages), ingested_at_us=0)
    assert isinstance(caught.value, TransientError)
    registry.outage = False  # the writer retries the same batch after a backoff
    result = decoder.decode(TOPIC, MessageBatch.of(messages), ingested_at_us=0)
    assert (result.row_count, result.failures) == (5, [])


def test_an_unreachable_registry_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with SchemaRegistryClient(f"http://127.0.0.1:{port}", timeout_s=2.0) as unreachable:
        decoder = AvroEventDecoder.confluent(CONTRACT, unreachable)
        with pytest.raises(TransientError, match="ConnectError"):
            decoder.decode(TOPIC, MessageBatch.of(_messages([_confluent(GOOD)])), ingested_at_us=0)


def test_a_server_that_is_not_a_registry_is_transient(registry: SchemaRegistry) -> None:
    with (
        SchemaRegistryClient(registry.url + "/not-the-api") as wrong,
        pytest.raises(RegistryUnavailableError, match="HTTP 404"),
    ):
        wrong.schema(SCHEMA_ID)


# --- settings and routing -----------------------------------------------------------------------


def test_settings_choose_the_value_format(tmp_path: Any) -> None:
    base = {"CDCFLOW_SECRETS_DIR": str(tmp_path)}
    assert load_settings(base).writer.value_format == "json"
    with pytest.raises(ConfigError, match="needs schema_registry_url"):
        load_settings({**base, "CDCFLOW_WRITER__VALUE_FORMAT": "avro-confluent"})
    with pytest.raises(ConfigError, match="http"):
        load_settings({**base, "CDCFLOW_WRITER__SCHEMA_REGISTRY_URL": "registry:8081"})
    settings = load_settings(
        {
            **base,
            "CDCFLOW_WRITER__VALUE_FORMAT": "avro-confluent",
            "CDCFLOW_WRITER__SCHEMA_REGISTRY_URL": "http://127.0.0.1:8081/",
        }
    )
    assert (settings.writer.value_format, settings.writer.schema_registry_url) == (
        "avro-confluent",
        "http://127.0.0.1:8081",
    )


def test_the_router_picks_the_decoder(registry: SchemaRegistry) -> None:
    contracts = ContractRegistry.of([CONTRACT])
    assert isinstance(Router("cdcflow", contracts, [], 1 << 20).route(TOPIC).decoder, JsonEventDecoder)
    with pytest.raises(ConfigError, match="schema registry URL"):
        Router("cdcflow", contracts, [], 1 << 20, value_format="avro-confluent")
    router = Router("cdcflow", contracts, [], 1 << 20, value_format="avro-confluent", schema_registry_url=registry.url)
    try:
        decoder = router.route(TOPIC).decoder
        assert isinstance(decoder, AvroEventDecoder)
        result = decoder.decode(TOPIC, MessageBatch.of(_messages([_confluent(GOOD)])), ingested_at_us=0)
        assert result.rows.column("account_id").to_pylist() == [7]
    finally:
        router.close()


def test_single_object_events_of_an_earlier_contract_version_still_decode() -> None:
    router = Router("cdcflow", ContractRegistry.of([CONTRACT]), [], 1 << 20, value_format="avro-single-object")
    before = router.route(TOPIC).decoder
    assert isinstance(before, AvroEventDecoder)
    evolved = replace(CONTRACT, version=2, columns=(*CONTRACT.columns, Column("nickname", "string", "text")))
    router.adopt(evolved)
    decoder = router.route(TOPIC).decoder
    assert decoder is not None
    assert decoder.contract.version == 2
    v2 = EnvelopeSchema.of(evolved)
    values: list[bytes | None] = [
        _single(_event("c", after=_row(1))),  # written with version 1
        _single(_event("c", after=_row(2, nickname="bo")), v2),
    ]
    result = decoder.decode(TOPIC, MessageBatch.of(_messages(values)), ingested_at_us=0)
    assert result.failures == []
    assert result.rows.select(["account_id", "nickname"]).to_pylist() == [
        {"account_id": 1, "nickname": None},
        {"account_id": 2, "nickname": "bo"},
    ]


# --- hostile values -------------------------------------------------------------------------------


def _zigzag(number: int) -> bytes:
    """An Avro long as it is written (zig-zag, then 7 bits a byte)."""
    rest = (number << 1) ^ (number >> 63) if number >= 0 else ((-number) << 1) - 1
    out = bytearray()
    while rest > 0x7F:
        out.append((rest & 0x7F) | 0x80)
        rest >>= 7
    out.append(rest)
    return bytes(out)


def _source_ts(event: dict[str, Any], ts_ms: int) -> dict[str, Any]:
    event = copy.deepcopy(event)
    event["source"].update(ts_ms=ts_ms, ts_us=None)
    return event


def _millis_schema() -> dict[str, Any]:
    """``reviewed_at`` as the shipped connector sends a timestamp(3): Debezium's milliseconds."""
    schema = envelope_schema(CONTRACT)
    fields = schema["fields"][0]["type"][1]["fields"]
    types = {f["name"]: f for f in fields}
    types["reviewed_at"]["type"] = ["null", {"type": "long", "connect.name": "io.debezium.time.Timestamp"}]
    return schema


def _logical_schema(column: str, logical: dict[str, Any]) -> dict[str, Any]:
    schema = envelope_schema(CONTRACT)
    for field_ in schema["fields"][0]["type"][1]["fields"]:
        if field_["name"] == column:
            field_["type"] = ["null", logical]
    return schema


def _recursive_schema() -> dict[str, Any]:
    """A writer schema with a type that contains itself: no Debezium envelope has one."""
    schema = envelope_schema(CONTRACT)
    node = {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"], "default": None}]}
    schema["fields"].append({"name": "tree", "type": ["null", node], "default": None})
    return schema


def _endless_array_schema() -> dict[str, Any]:
    schema = envelope_schema(CONTRACT)
    schema["fields"].append({"name": "blanks", "type": {"type": "array", "items": "null"}, "default": []})
    return schema


MILLIS_ID, MILLIS = 31, _millis_schema()
LOGICAL_MILLIS_ID, LOGICAL_MILLIS = (
    32,
    _logical_schema("reviewed_at", {"type": "long", "logicalType": "timestamp-millis"}),
)
LOGICAL_ZONED_ID, LOGICAL_ZONED = 33, _logical_schema("created_at", {"type": "long", "logicalType": "timestamp-micros"})
HUGE_SCALE_ID, HUGE_SCALE = (
    36,
    _logical_schema(
        "balance", {"type": "bytes", "logicalType": "decimal", "precision": 2_000_000_000, "scale": 1_297_587_212}
    ),
)
RECURSIVE_ID, RECURSIVE = 34, _recursive_schema()
ENDLESS_ID, ENDLESS = 35, _endless_array_schema()
HOSTILE_SCHEMAS = {
    MILLIS_ID: MILLIS,
    LOGICAL_MILLIS_ID: LOGICAL_MILLIS,
    LOGICAL_ZONED_ID: LOGICAL_ZONED,
    RECURSIVE_ID: RECURSIVE,
    ENDLESS_ID: ENDLESS,
    HUGE_SCALE_ID: HUGE_SCALE,
}
INFINITY_MS = 9_223_372_036_825_200_000  # PostgreSQL's `infinity` in a timestamp(3), as Debezium sends it


def _raw(schema_id: int, body: bytes) -> bytes:
    return CONFLUENT_MAGIC + schema_id.to_bytes(4, "big") + body


def _good_body(schema: dict[str, Any]) -> bytes:
    return _avro(GOOD, _parsed(schema))


HOSTILE: list[tuple[str, str, bytes]] = [
    (
        "scale-fuzzed",
        Reason.OUT_OF_RANGE,
        _confluent(_event("c", after=_row(7, rate={"scale": 1_297_587_212, "value": b"\x01"}))),
    ),
    (
        "scale-minus-ten-million",
        Reason.OUT_OF_RANGE,
        _confluent(_event("c", after=_row(7, rate={"scale": -(10**7), "value": b"\x01"}))),
    ),
    ("source-ts-year-33658", Reason.OUT_OF_RANGE, _confluent(_source_ts(GOOD, 1_000_000_000_000_000))),
    ("time-before-midnight", Reason.OUT_OF_RANGE, _confluent(_event("c", after=_row(7, cutoff=-1)))),
    (
        "timestamp-millis-infinity",
        Reason.OUT_OF_RANGE,
        _confluent(_event("c", after=_row(7, reviewed_at=INFINITY_MS)), MILLIS_ID, _parsed(MILLIS)),
    ),
    (
        "logical-timestamp-millis-infinity",
        Reason.OUT_OF_RANGE,
        _raw(
            LOGICAL_MILLIS_ID,
            _avro(
                _event("c", after=_row(7, reviewed_at=datetime(2026, 1, 1, tzinfo=UTC))), _parsed(LOGICAL_MILLIS)
            ).replace(_zigzag(1_767_225_600_000), _zigzag(INFINITY_MS), 1),
        ),
    ),
    (
        "logical-zoned-micros-year-294247",
        Reason.OUT_OF_RANGE,
        _raw(
            LOGICAL_ZONED_ID,
            _avro(
                _event("c", after=_row(7, created_at=datetime(2026, 1, 1, tzinfo=UTC))), _parsed(LOGICAL_ZONED)
            ).replace(_zigzag(1_767_225_600_000_000), _zigzag(INFINITY_MS), 1),
        ),
    ),
    # a timestamptz's infinity is a word where the ISO-8601 instant belongs; other text there is no instant
    ("zoned-infinity", Reason.OUT_OF_RANGE, _confluent(_event("c", after=_row(7, created_at="infinity")))),
    (
        "zoned-array-minus-infinity",
        Reason.OUT_OF_RANGE,
        _confluent(_event("c", after=_row(7, seen_at=["2026-01-02T03:04:05Z", "-infinity"]))),
    ),
    ("zoned-year-zero", Reason.OUT_OF_RANGE, _confluent(_event("c", after=_row(7, created_at="0000-06-01T00:00:00Z")))),
    (
        "zoned-array-year-292269055",
        Reason.OUT_OF_RANGE,
        _confluent(_event("c", after=_row(7, seen_at=["+292269055-12-02T23:00:00.000000Z"]))),
    ),
    ("zoned-not-an-instant", Reason.WRONG_TYPE, _confluent(_event("c", after=_row(7, created_at="yesterday")))),
    ("huge-string-length", Reason.MALFORMED_AVRO, _confluent(GOOD).replace(b"\x0ahello", _zigzag(2**62) + b"hello", 1)),
    (
        "negative-string-length",
        Reason.MALFORMED_AVRO,
        _confluent(GOOD).replace(b"\x0ahello", _zigzag(-(2**40)) + b"hello", 1),
    ),
    (
        "huge-array-count",
        Reason.MALFORMED_AVRO,
        _confluent(GOOD).replace(b"\x06\x02\x02a", _zigzag(2**61) + b"\x02\x02a", 1),
    ),
    (  # fastavro would turn these bytes into a Decimal in time quadratic in their length
        "decimal-of-a-megabyte",
        Reason.DECIMAL_OVERFLOW,
        _confluent(GOOD).replace(
            b"\x10" + (1234567890123456789).to_bytes(8, "big"), _zigzag(1_000_000) + b"\x7f" + b"\xff" * 999_999, 1
        ),
    ),
    (
        "decimal-scale-fuzzed",
        Reason.OUT_OF_RANGE,
        _raw(HUGE_SCALE_ID, _good_body(envelope_schema(CONTRACT))),  # the same bytes, read at another scale
    ),
    (
        "recursive-100000-deep",
        Reason.UNKNOWN_SCHEMA,
        _raw(RECURSIVE_ID, _good_body(RECURSIVE)[:-1] + b"\x02" * 100_000 + b"\x00"),
    ),
    (
        "endless-array-of-nulls",
        Reason.UNKNOWN_SCHEMA,
        _raw(ENDLESS_ID, _good_body(ENDLESS)[:-1] + _zigzag(2**62) + b"\x00"),
    ),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("reason", "value"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_values_are_refused_between_good_records(
    reason: str, value: bytes, registry: SchemaRegistry, client: SchemaRegistryClient
) -> None:
    registry.schemas.update(HOSTILE_SCHEMAS)
    values: list[bytes | None] = [_confluent(_event("c", after=_row(i))) for i in range(1, 40)]
    values.insert(17, value)
    result = _decode_confluent(client, values)
    assert [(f.reason, f.message.offset()) for f in result.failures] == [(reason, 117)]
    assert result.failures[0].detail
    assert result.rows.column("account_id").to_pylist() == list(range(1, 40))


def test_logical_time_types_are_read_as_integers_and_converted_exactly(
    registry: SchemaRegistry, client: SchemaRegistryClient
) -> None:
    registry.schemas.update(HOSTILE_SCHEMAS)
    millis = _event("c", after=_row(1, reviewed_at=datetime(2026, 5, 5, 10, 11, 12, 123000, tzinfo=UTC)))
    zoned = _event("c", after=_row(2, created_at=datetime(2026, 5, 6, 5, 8, 9, 654321, tzinfo=UTC)))
    values: list[bytes | None] = [
        _confluent(millis, LOGICAL_MILLIS_ID, _parsed(LOGICAL_MILLIS)),
        _confluent(zoned, LOGICAL_ZONED_ID, _parsed(LOGICAL_ZONED)),
        _confluent(_event("c", after=_row(3, reviewed_at=-62_135_596_800_000)), MILLIS_ID, _parsed(MILLIS)),
    ]
    result = _decode_confluent(client, values)
    assert result.failures == []
    assert result.rows.column("reviewed_at")[0].as_py() == datetime(2026, 5, 5, 10, 11, 12, 123000)
    assert result.rows.column("created_at")[1].as_py() == datetime(2026, 5, 6, 5, 8, 9, 654321, tzinfo=UTC)
    assert result.rows.column("reviewed_at")[2].as_py() == datetime(1, 1, 1)  # the first instant of year 1
