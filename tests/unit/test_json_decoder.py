"""Batch decoding of Debezium JSON events into the lake schema, with real confluent_kafka.Message objects."""

from __future__ import annotations

import base64
import json
import random
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, localcontext
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message
from structlog.testing import capture_logs

from services.common.contracts import Column, ContractRegistry, TableContract, lake_schema
from services.common.debezium import UNAVAILABLE_VALUE, json_batch
from services.common.debezium.envelope import untouched_toast_arrives_null
from services.common.debezium.json_batch import JsonEventDecoder
from services.common.debezium.records import Reason
from services.common.kafka.message_columns import MessageBatch
from services.consumer.routing import Router
from tests.fuzz.runner import _same_value

TOPIC = "cdcflow.lending.accounts"
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
        Column("settled_at", "timestamp_millis", "timestamp(3) without time zone"),
        Column("created_at", "timestamptz", "timestamp with time zone"),
        Column("cutoff", "time", "time without time zone"),
        Column("notes", "string", "text"),
        Column("profile", "json", "jsonb"),
        Column("ref", "uuid", "uuid"),
        Column("blob", "bytes", "bytea"),
        Column("tags", "array", "text[]", items=Column("element", "string", "text")),
        Column("active", "boolean", "boolean"),
        Column("score", "int16", "smallint"),
    ),
)


def _vsd(value: str) -> dict[str, Any]:
    d = Decimal(value)
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    unscaled = int("".join(map(str, digits))) * (-1 if sign else 1)
    raw = unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)
    return {"scale": -exponent, "value": base64.b64encode(raw).decode()}


def _row(account_id: int | None, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "account_id": account_id,
        "balance": "__NUM__12345678901234567.89",
        "rate": _vsd("0.000123456789"),
        "opened_on": 20_486,
        "reviewed_at": 1_777_975_872_123_456,
        "settled_at": 1_777_975_872_123,
        "created_at": "2026-05-06T05:08:09.654321Z",
        "cutoff": 61_200_000_000,
        "notes": "hello",
        "profile": '{"tier": "gold"}',
        "ref": "c8db6e24-be26-4bfa-8d78-99bc5d85c678",
        "blob": base64.b64encode(b"\x00\x01\xff").decode(),
        "tags": ["a", "b"],
        "active": True,
        "score": 42,
    }
    row.update(overrides)
    return row


def _event(
    op: str, *, before: dict[str, Any] | None = None, after: dict[str, Any] | None = None, **extra: Any
) -> bytes:
    source: dict[str, Any] = {
        "ts_ms": 1_795_387_780_402,
        "ts_us": 1_795_387_780_402_545,
        "lsn": 26_503_728,
        "txId": 731,
    }
    source.update({"snapshot": "false", "schema": "lending", "table": "accounts", "db": "lending"})
    document = {"before": before, "after": after, "source": source, "op": op, "ts_ms": 1, "transaction": None}
    document.update(extra)
    text = json.dumps(document, separators=(",", ":"))
    return text.replace('"__NUM__', "").replace('.89"', ".89").encode()  # decimals are JSON numbers


def _messages(values: Sequence[bytes | None], first_offset: int = 100, partition: int = 3) -> list[Message]:
    return [
        Message(
            topic=TOPIC,
            partition=partition,
            offset=first_offset + i,
            key=b'{"account_id":1}',
            value=value,
            timestamp=(TIMESTAMP_CREATE_TIME, 1_795_387_781_000),
        )
        for i, value in enumerate(values)
    ]


def _decode(values: Sequence[bytes | None], **kwargs: Any) -> Any:
    decoder = JsonEventDecoder(CONTRACT, **kwargs)
    return decoder.decode(TOPIC, MessageBatch.of(_messages(values)), ingested_at_us=1_795_387_790_000_000)


def test_every_type_decodes_exactly() -> None:
    result = _decode([_event("c", after=_row(1))])
    assert result.failures == []
    assert result.rows.schema.equals(lake_schema(CONTRACT), check_metadata=False)
    (row,) = result.rows.to_pylist()
    assert row["account_id"] == 1
    assert row["balance"] == Decimal("12345678901234567.89")
    assert row["rate"] == Decimal("0.000123456789")
    assert row["opened_on"] == date(2026, 2, 2)
    assert row["reviewed_at"] == datetime(2026, 5, 5, 10, 11, 12, 123456)
    assert row["settled_at"] == datetime(2026, 5, 5, 10, 11, 12, 123000)  # milliseconds on the wire
    assert row["created_at"] == datetime(2026, 5, 6, 5, 8, 9, 654321, tzinfo=UTC)
    assert row["cutoff"] == time(17, 0)
    assert row["profile"] == '{"tier": "gold"}'
    assert row["blob"] == b"\x00\x01\xff"
    assert row["tags"] == ["a", "b"]
    assert row["active"] is True
    assert row["score"] == 42
    assert row["_op"] == "c"
    assert row["_source_lsn"] == 26_503_728
    assert row["_source_txid"] == 731
    assert row["_source_ts"] == datetime(2026, 11, 22, 22, 49, 40, 402545, tzinfo=UTC)
    assert row["_is_snapshot"] is False
    assert row["_unavailable_columns"] == []
    assert (row["_kafka_topic"], row["_kafka_partition"], row["_kafka_offset"]) == (TOPIC, 3, 100)
    assert row["_kafka_timestamp"] == datetime(2026, 11, 22, 22, 49, 41, tzinfo=UTC)


def test_ops_images_tombstones_and_truncate() -> None:
    result = _decode(
        [
            _event("r", after=_row(1)),
            _event("u", before=None, after=_row(1, notes="changed")),
            _event("d", before=_row(1, notes="last"), after=None),
            None,  # the tombstone after a delete
            _event("t"),
        ]
    )
    assert result.failures == []
    assert result.tombstones == 1
    rows = result.rows.to_pylist()
    assert [r["_op"] for r in rows] == ["r", "u", "d", "t"]
    assert [r["_kafka_offset"] for r in rows] == [100, 101, 102, 104]
    assert rows[1]["notes"] == "changed"
    assert rows[2]["account_id"] == 1  # a delete carries its before image: the key ...
    assert rows[2]["notes"] is None  # ... and, without REPLICA IDENTITY FULL, nothing else is real data
    assert rows[3]["account_id"] is None  # a truncate has no row image


def test_a_key_only_delete_reads_null_outside_its_key_even_with_an_after_image() -> None:
    result = _decode(
        [
            _event("u", after=_row(1, notes="kept")),
            _event("d", before=_row(2, notes="filler"), after=_row(2, notes="not an image a delete has")),
        ]
    )
    assert result.failures == []
    rows = result.rows.to_pylist()
    assert [(r["account_id"], r["notes"]) for r in rows] == [(1, "kept"), (2, None)]


def test_full_replica_identity_keeps_the_whole_before_image() -> None:
    decoder = JsonEventDecoder(replace(CONTRACT, replica_identity="full"))
    messages = _messages([_event("d", before=_row(1, notes="last"), after=None)])
    (row,) = decoder.decode(TOPIC, MessageBatch.of(messages), ingested_at_us=0).rows.to_pylist()
    assert row["notes"] == "last"
    assert row["balance"] == Decimal("12345678901234567.89")


def test_snapshot_flag() -> None:
    value = _event("r", after=_row(1)).replace(b'"snapshot":"false"', b'"snapshot":"last"')
    assert _decode([value]).rows.column("_is_snapshot").to_pylist() == [True]


def test_toast_placeholder_becomes_null_and_is_listed() -> None:
    unavailable_blob = base64.b64encode(UNAVAILABLE_VALUE.encode()).decode()
    result = _decode(
        [
            _event("u", after=_row(1, notes=UNAVAILABLE_VALUE, blob=unavailable_blob)),
            _event("u", after=_row(2, tags=[UNAVAILABLE_VALUE], profile=UNAVAILABLE_VALUE)),
            _event("u", after=_row(3)),
            # an hstore (a json column) as Debezium sends it untouched: the placeholder mapped to itself
            _event(
                "u", after=_row(4, profile=json.dumps({UNAVAILABLE_VALUE: UNAVAILABLE_VALUE}, separators=(",", ":")))
            ),
        ]
    )
    assert result.failures == []
    first, second, third, fourth = result.rows.to_pylist()
    assert (fourth["profile"], fourth["_unavailable_columns"]) == (None, ["profile"])
    assert first["notes"] is None
    assert first["blob"] is None
    assert first["_unavailable_columns"] == ["notes", "blob"]
    assert second["tags"] is None
    assert second["profile"] is None
    assert sorted(second["_unavailable_columns"]) == ["profile", "tags"]
    assert third["_unavailable_columns"] == []
    assert UNAVAILABLE_VALUE not in json.dumps(result.rows.to_pylist(), default=str)


def test_a_value_that_only_contains_the_placeholder_is_kept() -> None:
    inside = f"see {UNAVAILABLE_VALUE} in the log"
    result = _decode([_event("u", after=_row(1, notes=inside, profile=json.dumps({"note": UNAVAILABLE_VALUE})))])
    (row,) = result.rows.to_pylist()
    assert row["notes"] == inside
    assert row["profile"] == json.dumps({"note": UNAVAILABLE_VALUE})
    assert row["_unavailable_columns"] == []


@pytest.mark.parametrize("op", ["", "cc", "dd", "C", "é", "ü"])
def test_an_op_that_is_not_one_known_letter_is_refused(op: str) -> None:
    values: list[bytes | None] = [_event("c", after=_row(i)) for i in range(1, 6)]
    values.insert(2, _event(op, before=_row(9), after=_row(9)))
    values.append(_event("d", before=_row(5), after=None))
    result = _decode(values)
    assert [(f.reason, f.message.offset()) for f in result.failures] == [(Reason.UNKNOWN_OP, 102)]
    assert result.rows.column("_op").to_pylist() == ["c", "c", "c", "c", "c", "d"]


def test_a_null_op_is_refused() -> None:
    result = _decode([_event("c", after=_row(1)), _event("c", after=_row(2)).replace(b'"op":"c"', b'"op":null')])
    assert [(f.reason, f.message.offset()) for f in result.failures] == [(Reason.UNKNOWN_OP, 101)]


def test_a_delete_whose_images_differ_in_unknown_columns() -> None:
    """Arrow's reader gives each image the columns it found: the two images' types then differ."""
    result = _decode(
        [
            _event("c", after=_row(1)),
            _event("d", before={**_row(2), "surprise": 1}, after=None),
            _event("d", before=_row(3), after=None),
        ]
    )
    assert [(f.reason, f.message.offset()) for f in result.failures] == [(Reason.SCHEMA_MISMATCH, 101)]
    assert [(r["_op"], r["account_id"]) for r in result.rows.to_pylist()] == [("c", 1), ("d", 3)]


POISON: list[tuple[str, bytes]] = [
    (Reason.MALFORMED_JSON, b'{"op":"c","after":{"account_id":'),
    (Reason.MALFORMED_JSON, b"[1, 2, 3]"),
    (Reason.INVALID_UTF8, b'{"op":"c","after":{"account_id":7,"notes":"\xff\xfe"},"source":{"lsn":1}}'),
    (Reason.INVALID_UTF8, _event("c", after=_row(7)).replace(b'"op":', b'"\xff\xfe":', 1)),  # a field name
    (Reason.WRONG_TYPE, _event("c", after=_row(7, score="forty-two"))),
    (Reason.DECIMAL_OVERFLOW, _event("c", after=_row(7)).replace(b"12345678901234567.89", b"123456789012345678901.89")),
    (Reason.DECIMAL_OVERFLOW, _event("c", after=_row(7, rate=_vsd("1" + "0" * 80)))),
    (Reason.MISSING_SOURCE, _event("c", after=_row(7)).replace(b'"source":{', b'"nosource":{')),
    (Reason.UNKNOWN_OP, _event("x", after=_row(7))),
    (Reason.MISSING_IMAGE, _event("c", after=None)),
    (Reason.MISSING_KEY, _event("c", after=_row(None))),
    (Reason.SCHEMA_MISMATCH, _event("c", after={**_row(7), "surprise": 1})),
    (Reason.WRONG_TYPE, _event("c", after=_row(7, blob="not base64!!"))),
    # the placeholder's text where bytea carries its base64: not base64, not a value either
    (Reason.WRONG_TYPE, _event("u", after=_row(7, blob=UNAVAILABLE_VALUE))),
]


@pytest.mark.parametrize(("reason", "value"), POISON, ids=[f"{r}-{i}" for i, (r, _) in enumerate(POISON)])
def test_poison_is_isolated_between_good_records(reason: str, value: bytes) -> None:
    values: list[bytes | None] = [_event("c", after=_row(i)) for i in range(1, 40)]
    values.insert(17, value)
    result = _decode(values)
    assert [(f.reason, f.message.offset()) for f in result.failures] == [(reason, 117)]
    assert result.failures[0].message.value() == value  # the raw record is kept for the DLQ
    offsets = result.rows.column("_kafka_offset").to_pylist()
    assert offsets == [o for o in range(100, 140) if o != 117]


def test_oversized_values_are_refused_without_parsing() -> None:
    big = _event("c", after=_row(5, notes="x" * 5_000))
    result = _decode([_event("c", after=_row(4)), big], max_value_bytes=4_096)
    assert [(f.reason, f.message.offset()) for f in result.failures] == [(Reason.OVERSIZED, 101)]
    assert result.rows.num_rows == 1


def test_a_value_with_newlines_is_decoded_on_its_own() -> None:
    pretty = json.dumps(json.loads(_event("c", after=_row(9)).decode()), indent=2).encode()
    result = _decode([_event("c", after=_row(8)), pretty, _event("c", after=_row(10))])
    assert result.failures == []
    assert result.rows.column("account_id").to_pylist() == [8, 9, 10]


def test_many_poison_records_and_empty_input() -> None:
    values: list[bytes | None] = [b"garbage" if i % 7 == 0 else _event("c", after=_row(i)) for i in range(200)]
    result = _decode(values)
    assert len(result.failures) == len(range(0, 200, 7))
    assert result.rows.num_rows + len(result.failures) == 200
    empty = _decode([])
    assert empty.rows.num_rows == 0
    assert empty.rows.schema.equals(lake_schema(CONTRACT))


def test_decoded_rows_are_a_valid_lake_table() -> None:
    result = _decode([_event("c", after=_row(i)) for i in range(5)])
    assert isinstance(result.rows, pa.Table)
    assert result.rows.schema.metadata[b"cdcflow.table"] == b"lending.accounts"


@pytest.mark.parametrize("value", [b"null", b" null", b"null ", b'"text"', b"123", b"[1]", b"true", b""])
@pytest.mark.parametrize("position", [0, 5, 9])
def test_values_that_are_not_objects_never_reach_the_batch_parser(value: bytes, position: int) -> None:
    values: list[bytes | None] = [_event("c", after=_row(i)) for i in range(1, 10)]
    values.insert(position, value)
    result = _decode(values)
    assert [(f.reason, f.message.offset()) for f in result.failures] == [(Reason.MALFORMED_JSON, 100 + position)]
    assert result.rows.num_rows == 9


def test_events_with_the_embedded_connect_schema_decode_the_same_value() -> None:
    plain = [_event("c", after=_row(i)) for i in range(1, 4)]
    schema = {"type": "struct", "fields": [{"type": "struct", "field": "after", "optional": True}], "name": "x"}
    wrapped = [b'{"schema":' + json.dumps(schema).encode() + b',"payload":' + v + b"}" for v in plain]
    mixed = [wrapped[0], plain[1], wrapped[2]]
    expected = _decode(plain).rows.drop_columns(["_ingested_at"])
    assert _decode(mixed).rows.drop_columns(["_ingested_at"]).equals(expected)
    broken = _decode([b'{"schema":{},"payload":{"op":"c","after":' + b"}"])
    assert [f.reason for f in broken.failures] == [Reason.MALFORMED_JSON]
    assert broken.failures[0].message.value() == b'{"schema":{},"payload":{"op":"c","after":}'  # original bytes


def test_tombstones_and_poison_in_one_batch_keep_every_offset_in_place() -> None:
    good = [_event("c", after=_row(i)) for i in range(1, 5)]
    values: list[bytes | None] = [None, good[0], None, b"{garbage", good[1], None, good[2], b"[]", good[3]]
    result = _decode(values)
    assert result.tombstones == 3
    assert [(f.reason, f.message.offset()) for f in result.failures] == [
        (Reason.MALFORMED_JSON, 103),
        (Reason.MALFORMED_JSON, 107),
    ]
    assert result.rows.column("_kafka_offset").to_pylist() == [101, 104, 106, 108]
    assert result.rows.column("account_id").to_pylist() == [1, 2, 3, 4]


def test_a_bad_row_after_tombstones_is_traced_to_its_own_message() -> None:
    # the fast reader skips tombstones, so its rows are not the batch's positions: each failure must still
    # name the message it came from, and each row keep its own offset and partition
    values: list[bytes | None] = [None, _event("c", after=_row(1)), None, None, _event("c", after=_row(None))]
    values += [None, _event("d", before=_row(3)), None, _event("c", after=_row(4))]
    result = _decode(values)
    assert result.tombstones == 5
    assert [(f.reason, f.message.offset(), f.message.value()) for f in result.failures] == [
        (Reason.MISSING_KEY, 104, values[4])
    ]
    assert result.rows.column("_kafka_offset").to_pylist() == [101, 106, 108]
    assert result.rows.column("account_id").to_pylist() == [1, 3, 4]


def _decode_partitions(runs: Sequence[tuple[int, Sequence[bytes | None]]]) -> Any:
    """One batch of several partitions, as the writer hands a topic's poll over: runs of (partition, values)."""
    messages = [m for partition, values in runs for m in _messages(values, partition=partition)]
    return JsonEventDecoder(CONTRACT).decode(TOPIC, MessageBatch.of(messages), ingested_at_us=1_795_387_790_000_000)


def _offsets_by_partition(result: Any) -> dict[int, list[int]]:
    return {p: rows.column("_kafka_offset").to_pylist() for p, rows in result.rows_by_partition().items()}


def test_a_batch_of_several_partitions_keeps_each_partitions_rows() -> None:
    # the same offsets in both partitions: rows must not be ordered by offset alone
    result = _decode_partitions(
        [(0, [_event("c", after=_row(i)) for i in range(5)]), (5, [_event("c", after=_row(i)) for i in range(10, 13)])]
    )
    assert result.failures == []
    assert result.rows.column("_kafka_partition").to_pylist() == [0] * 5 + [5] * 3
    assert _offsets_by_partition(result) == {0: list(range(100, 105)), 5: [100, 101, 102]}
    split = result.rows_by_partition()
    assert split[5].column("account_id").to_pylist() == [10, 11, 12]
    assert split[5].column("_kafka_partition").to_pylist() == [5, 5, 5]


def test_poison_in_several_partitions_keeps_each_partitions_offset_order() -> None:
    # a rejected value splits the batch into parts that are put back together by partition, then offset
    first: list[bytes | None] = [_event("c", after=_row(i)) for i in range(20)]
    second: list[bytes | None] = [_event("c", after=_row(i)) for i in range(100, 120)]
    first[12], second[7], second[15] = b"{garbage", b"[]", _event("c", after=_row(None))
    result = _decode_partitions([(4, second), (1, first)])
    assert [(f.message.partition(), f.message.offset(), f.reason) for f in result.failures] == [
        (1, 112, Reason.MALFORMED_JSON),
        (4, 107, Reason.MALFORMED_JSON),
        (4, 115, Reason.MISSING_KEY),
    ]
    assert _offsets_by_partition(result) == {
        1: [o for o in range(100, 120) if o != 112],
        4: [o for o in range(100, 120) if o not in (107, 115)],
    }
    split = result.rows_by_partition()
    assert split[4].column("account_id").to_pylist() == [i for i in range(100, 120) if i not in (107, 115)]


def test_interleaved_partitions_are_grouped_in_offset_order() -> None:
    messages = [
        m for i in range(6) for m in _messages([_event("c", after=_row(i))], first_offset=200 + i, partition=i % 2)
    ]
    result = JsonEventDecoder(CONTRACT).decode(TOPIC, MessageBatch.of(messages), ingested_at_us=0)
    assert _offsets_by_partition(result) == {0: [200, 202, 204], 1: [201, 203, 205]}


def test_each_partitions_rows_are_held_in_buffers_of_their_own() -> None:
    """A buffered partition must not keep the other partitions' rows of its batch alive."""
    result = _decode_partitions(
        [(0, [_event("c", after=_row(i)) for i in range(50)]), (1, [_event("c", after=_row(7))])]
    )
    parent = result.rows.column("notes").chunk(0).buffers()[2]
    for rows in result.rows_by_partition().values():
        data = rows.column("notes").chunk(0).buffers()[2]
        assert not parent.address <= data.address < parent.address + parent.size
        assert data.size == 5 * rows.num_rows  # "hello" per row: only its own rows' text
    single = _decode_partitions([(2, [_event("c", after=_row(i)) for i in range(3)])])
    assert single.rows_by_partition()[2] is single.rows  # one partition: nothing to split or copy


# --- hostile values: refused before any parser or conversion can crash, hang or wrap on them ------------


def _nested(depth: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * depth + close * depth


def _with_extra(value: bytes, raw: bytes) -> bytes:
    """An event with one more top-level key holding ``raw`` as it is."""
    return value[:-1] + b',"extra":' + raw + b"}"


def _source_times(value: bytes, *, ts_ms: int, ts_us: int | None = None) -> bytes:
    value = value.replace(b'"ts_ms":1795387780402', b'"ts_ms":%d' % ts_ms)
    replacement = b"" if ts_us is None else b'"ts_us":%d,' % ts_us
    return value.replace(b'"ts_us":1795387780402545,', replacement)


_GOOD = _event("c", after=_row(7))


def _wrapped(value: bytes, schema: bytes = b'{"type":"struct","optional":false}') -> bytes:
    return b'{"schema":' + schema + b',"payload":' + value + b"}"


HOSTILE: list[tuple[str, str, bytes]] = [
    ("deep-unknown-key", Reason.TOO_DEEP, _with_extra(_GOOD, _nested(20_000))),
    ("deep-objects", Reason.TOO_DEEP, _with_extra(_GOOD, b'{"a":' * 20_000 + b"1" + b"}" * 20_000)),
    ("deep-in-after", Reason.TOO_DEEP, _GOOD.replace(b'"tags":["a","b"]', b'"tags":' + _nested(20_000))),
    ("deep-not-an-object", Reason.TOO_DEEP, _nested(20_000)),
    ("deep-wrapped", Reason.TOO_DEEP, b'{"schema":' + _nested(20_000) + b',"payload":' + _GOOD + b"}"),
    ("just-too-deep", Reason.TOO_DEEP, _with_extra(_GOOD, _nested(128))),
    ("huge-integer-not-an-object", Reason.MALFORMED_JSON, b"[" + b"1" * 5_000 + b"]"),
    (
        "huge-integer-in-a-column",
        Reason.WRONG_TYPE,
        _event("c", after=_row(7, score=None)).replace(b'"score":null', b'"score":' + b"1" * 5_000),
    ),
    ("huge-integer-and-garbage", Reason.MALFORMED_JSON, b'{"a":' + b"1" * 5_000 + b",}"),
    (
        "invalid-utf8-key-in-after",
        Reason.INVALID_UTF8,
        _event("c", after={**_row(7), "zz": 1}).replace(b'"zz"', b'"z\xffz"'),
    ),
    ("source-ts-ms-year-33658", Reason.OUT_OF_RANGE, _source_times(_GOOD, ts_ms=1_000_000_000_000_000)),
    ("source-ts-ms-wraps", Reason.OUT_OF_RANGE, _source_times(_GOOD, ts_ms=9_223_372_036_825_200_000)),
    ("source-ts-ms-before-year-1", Reason.OUT_OF_RANGE, _source_times(_GOOD, ts_ms=-62_135_596_800_001)),
    ("source-ts-us-year-33658", Reason.OUT_OF_RANGE, _source_times(_GOOD, ts_ms=1, ts_us=10**18)),
    (
        "scale-minus-ten-million",
        Reason.OUT_OF_RANGE,
        _event("c", after=_row(7, rate={"scale": -(10**7), "value": "AQ=="})),
    ),
    ("scale-fuzzed", Reason.OUT_OF_RANGE, _event("c", after=_row(7, rate={"scale": 1_297_587_212, "value": "AQ=="}))),
    (
        "timestamp-millis-infinity",
        Reason.OUT_OF_RANGE,
        _event("c", after=_row(7, settled_at=9_223_372_036_825_200_000)),
    ),
    (
        "timestamp-millis-minus-infinity",
        Reason.OUT_OF_RANGE,
        _event("c", after=_row(7, settled_at=-9_223_372_036_832_400_000)),
    ),
    ("time-before-midnight", Reason.OUT_OF_RANGE, _event("c", after=_row(7, cutoff=-1))),
    ("time-after-24h", Reason.OUT_OF_RANGE, _event("c", after=_row(7, cutoff=86_400_000_001))),
    # Arrow's reader crashes the process converting a decimal with an exponent of millions of digits
    ("decimal-exponent", Reason.OUT_OF_RANGE, _GOOD.replace(b"12345678901234567.89", b"1e-999999999")),
    ("decimal-exponent-text", Reason.OUT_OF_RANGE, _GOOD.replace(b"12345678901234567.89", b'"1e-999999999"')),
    ("zero-exponent-text", Reason.OUT_OF_RANGE, _GOOD.replace(b"12345678901234567.89", b'"0E-00010000000"')),
    # text that is no number, an exponent inside it too: Arrow's reader refuses it unconverted
    ("decimal-text", Reason.WRONG_TYPE, _GOOD.replace(b"12345678901234567.89", b'"twelve"')),
    ("decimal-empty-text", Reason.WRONG_TYPE, _GOOD.replace(b"12345678901234567.89", b'""')),
    ("decimal-text-exponent", Reason.WRONG_TYPE, _GOOD.replace(b"12345678901234567.89", b'"x1e-999999999"')),
    ("decimal-text-exponent-after", Reason.WRONG_TYPE, _GOOD.replace(b"12345678901234567.89", b'"1e-999999999x"')),
    ("payload-not-an-object", Reason.MALFORMED_JSON, b'{"schema":{"type":"struct"},"payload":null}'),
    ("two-documents", Reason.MALFORMED_JSON, _GOOD + b" " + _GOOD),
    ("open-document", Reason.MALFORMED_JSON, b'{"before":null,"after":'),
    ("text-after-the-document", Reason.MALFORMED_JSON, _GOOD + b" x"),
    # an unknown key inside a column's own struct, in one image only: the images' types differed
    (
        "key-inside-a-column-struct",
        Reason.WRONG_TYPE,
        _event("d", before=_row(7, rate={**_vsd("1.5"), 'a"b': 1}), after=_row(7)),
    ),
    ("escaped-exponent", Reason.OUT_OF_RANGE, _GOOD.replace(b"12345678901234567.89", b'"1\\u0065-999999999"')),
    (
        "duplicate-key-exponent",
        Reason.OUT_OF_RANGE,
        _GOOD.replace(b'"balance":', b'"balance":"1e-99999999","balance":'),
    ),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("reason", "value"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_values_are_refused_between_good_records(reason: str, value: bytes) -> None:
    values: list[bytes | None] = [_event("c", after=_row(i)) for i in range(1, 40)]
    values.insert(17, value)
    result = _decode(values)
    assert [(f.reason, f.message.offset()) for f in result.failures] == [(reason, 117)]
    assert result.failures[0].message.value() == value
    assert result.failures[0].detail
    assert result.rows.column("_kafka_offset").to_pylist() == [o for o in range(100, 140) if o != 117]


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
def test_values_that_are_not_one_document_never_shift_rows_onto_other_records(native_reader: bool) -> None:
    """Arrow's reader reads every document a line holds and lets an open one run on over the next line: an open
    value, one that closes it, and one of two documents read together as three rows would land the last two
    events under the offsets of the records before them, and the middle record nowhere."""
    values: list[bytes | None] = [
        _event("c", after=_row(1)),
        b'{"p":',
        _event("c", after=_row(2)) + b"}",
        _event("c", after=_row(3)) + _event("c", after=_row(4)),
        _event("c", after=_row(5)),
    ]
    result = _decode(values, native_reader=native_reader)
    assert [(f.reason, f.message.offset()) for f in result.failures] == [
        (Reason.MALFORMED_JSON, 101),
        (Reason.MALFORMED_JSON, 102),
        (Reason.MALFORMED_JSON, 103),
    ]
    assert result.rows.select(["account_id", "_kafka_offset"]).to_pylist() == [
        {"account_id": 1, "_kafka_offset": 100},
        {"account_id": 5, "_kafka_offset": 104},
    ]


# Debezium's decimal.handling.mode=string: the number's text as a string; forms no JSON number takes too
_DECIMAL_TEXTS = ("12.5", "-0.05", "0", "-0", "+1", "01", ".5", "5.", " 1", "1e2", "1.234", "abc", "", "1\\u0030")


def test_decimal_strings_are_read_alike_on_both_paths() -> None:
    """A decimal column's string that holds exactly a number as JSON writes one is read by the native reader
    (a table whose connector writes decimals as strings keeps the fast path); any other form is left to Arrow's
    reader, whose outcome is the record's on either path."""
    values: list[bytes | None] = [
        _event("c", after=_row(n)).replace(b"12345678901234567.89", b'"' + text.encode() + b'"')
        for n, text in enumerate(_DECIMAL_TEXTS, start=1)
    ]
    results = [_decode(values, native_reader=native_reader) for native_reader in (True, False)]
    outcomes = [
        (r.rows.select(["account_id", "balance"]).to_pylist(), [(f.reason, f.message.offset()) for f in r.failures])
        for r in results
    ]
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == [
        {"account_id": 1, "balance": Decimal("12.50")},
        {"account_id": 2, "balance": Decimal("-0.05")},
        {"account_id": 3, "balance": Decimal("0.00")},
        {"account_id": 4, "balance": Decimal("0.00")},
        {"account_id": 5, "balance": Decimal("1.00")},  # Arrow's reader takes a sign, leading zeros, a bare point
        {"account_id": 6, "balance": Decimal("1.00")},
        {"account_id": 7, "balance": Decimal("0.50")},
        {"account_id": 8, "balance": Decimal("5.00")},
        {"account_id": 10, "balance": Decimal("100.00")},
        {"account_id": 14, "balance": Decimal("10.00")},  # an escape spells a digit
    ]
    assert outcomes[0][1] == [
        (Reason.WRONG_TYPE, 108),
        (Reason.DECIMAL_OVERFLOW, 110),
        (Reason.WRONG_TYPE, 111),
        (Reason.WRONG_TYPE, 112),
    ]
    fast = JsonEventDecoder(CONTRACT)._fast
    assert fast is not None
    read = fast.read(MessageBatch.of(_messages(values[:4])).values, 0, max_bytes=1 << 20)
    assert (read.rejected, read.rows.num_rows) == (None, 4)


def test_brackets_in_strings_are_not_depth() -> None:
    """A jsonb text full of brackets is an ordinary value, and 128 levels (the top object counted) are read
    by either reader."""
    text = '[{"a": "\\"[[[" }' * 5_000 + "\\\\"
    # a balance given as a string is a form only Arrow's reader takes, so the value leaves the fast path
    slow = _event("c", after=_row(7, profile=text)).replace(b":12345678901234567.89,", b':"12.50",')
    deepest = _with_extra(_event("c", after=_row(8)), _nested(127))
    result = _decode([_event("c", after=_row(6)), slow, _with_extra(slow, _nested(127)), deepest])
    assert result.failures == []
    assert result.rows.column("profile").to_pylist()[1:3] == [text, text]
    assert result.rows.column("balance").to_pylist()[1] == Decimal("12.50")
    assert result.rows.column("account_id").to_pylist() == [6, 7, 7, 8]


def _after_payload(wrapped: bytes, member: bytes) -> bytes:
    """``wrapped`` with one more member after its payload."""
    return wrapped[:-1] + b"," + member + b"}"


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
def test_wrappers_unwrapped_by_their_head_are_read_as_in_full(native_reader: bool) -> None:
    """Past the first wrapper, those that begin with its bytes before the payload are unwrapped by that head;
    what Arrow's reader cannot read as one document each (a member after the payload, the payload given twice,
    two documents in it) is unwrapped in full, as the native reader unwraps it."""
    events = {n: _event("c", after=_row(n)) for n in range(1, 9)}
    values: list[bytes | None] = [
        _wrapped(events[1]),
        _wrapped(events[2]) + b" \t",
        _after_payload(_wrapped(events[3]), b'"x":{"a":1}'),
        _after_payload(_wrapped(events[4]), b'"payload":' + events[5]),
        _wrapped(events[6] + events[7]),
        _wrapped(events[8]),
    ]
    result = _decode(values, native_reader=native_reader)
    assert result.rows.column("account_id").to_pylist() == [1, 2, 3, 8]
    assert [(f.reason, f.message.offset()) for f in result.failures] == [
        (Reason.WRONG_TYPE, 103),  # a wrapper without one payload is read as it is: "payload" given twice
        (Reason.MALFORMED_JSON, 104),
    ]


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
def test_a_member_after_the_payload_that_repeats_it_is_not_the_head(native_reader: bool) -> None:
    """The head is what precedes the payload only when the payload is the last member: here the text before
    the closing brace ends with the payload's text but belongs to the member ``x``, and a later wrapper whose
    ``x`` holds another event must still give its payload."""
    first, other = _event("c", after=_row(1)), _event("c", after=_row(3))
    values: list[bytes | None] = [
        _after_payload(_wrapped(first), b'"x":' + first),
        _after_payload(_wrapped(first), b'"x":' + other),
    ]
    assert _decode(values, native_reader=native_reader).rows.column("account_id").to_pylist() == [1, 1]


def test_wrappers_past_the_first_are_unwrapped_by_its_head() -> None:
    values: list[bytes | None] = [_wrapped(_event("c", after=_row(n))) for n in range(1, 6)]
    decoder = JsonEventDecoder(CONTRACT, native_reader=False)
    batch = MessageBatch.of(_messages(values))
    screened = decoder._screen(batch.values)
    sorted_out = decoder._sorted_out(batch, np.arange(5), screened, [])
    assert (sorted_out.bulk, sorted_out.unproven) == ([0], [1, 2, 3, 4])
    assert sorted_out.payloads[3] == _event("c", after=_row(4))


def test_the_payload_is_the_wrappers_own_whatever_the_schema_or_the_event_holds() -> None:
    schema = b'{"type":"struct","parameters":{"a":"1","payload":"2"},"optional":false}'
    values: list[bytes | None] = [
        _wrapped(_event("c", after=_row(1)), schema),
        _wrapped(_event("c", after=_row(2)).replace(b'"op":"c"', b'"x":{"y":1,"payload":{}},"op":"c"')),
        _wrapped(_event("c", after=_row(3)).replace(b"12345678901234567.89", b'"1.5"')),  # the general path
        # a column named "payload" (null: not a mismatch); Arrow was given `null},"source":…` and crashed
        _wrapped(_event("c", after={**_row(4), "payload": None}).replace(b"12345678901234567.89", b'"1.5"')),
        _wrapped(_event("c", after={**_row(5), "payload": 1}).replace(b"12345678901234567.89", b'"1.5"')),
    ]
    result = _decode(values)
    assert [(f.reason, f.column, f.message.offset()) for f in result.failures] == [
        (Reason.SCHEMA_MISMATCH, "payload", 104)
    ]
    assert result.rows.column("account_id").to_pylist() == [1, 2, 3, 4]


def test_huge_exponents_outside_decimal_columns_are_only_text() -> None:
    """Only a decimal column's exponent reaches Arrow's decimal conversion; text that looks like one is kept."""
    notes = "1e-999999999 and 9e12345678"
    slow = _event("c", after=_row(7, notes=notes)).replace(b":12345678901234567.89,", b':"1.5E+1",')
    result = _decode([slow, _with_extra(_event("c", after=_row(8)), b"1e-999999999")])
    assert result.failures == []
    assert result.rows.column("notes").to_pylist()[0] == notes
    assert result.rows.column("balance").to_pylist()[0] == Decimal("15.00")


def test_a_time_of_24_00_is_refused_alone() -> None:
    """PostgreSQL's time type includes 24:00:00 (Debezium sends a whole day of microseconds); Arrow's time ends
    before it, and a lake file holding it fails the loader's validation with every other row of the file."""
    last = 86_400_000_000 - 1
    result = _decode([_event("c", after=_row(i, cutoff=t)) for i, t in ((7, last), (8, last + 1), (9, 0))])
    assert [(f.reason, f.message.offset()) for f in result.failures] == [(Reason.OUT_OF_RANGE, 101)]
    assert "column cutoff: 86400000000 µs is not a time of day before 24:00:00" in result.failures[0].detail
    assert result.rows.column("cutoff").cast(pa.int64()).to_pylist() == [last, 0]
    result.rows.validate(full=True)


def test_a_kafka_timestamp_beyond_year_9999_is_refused() -> None:
    messages = _messages([_event("c", after=_row(i)) for i in range(3)])
    messages[1] = Message(
        topic=TOPIC,
        partition=3,
        offset=101,
        key=b"k",
        value=_event("c", after=_row(1)),
        timestamp=(TIMESTAMP_CREATE_TIME, 10**16),
    )
    result = JsonEventDecoder(CONTRACT).decode(TOPIC, MessageBatch.of(messages), ingested_at_us=0)
    assert [(f.reason, f.message.offset()) for f in result.failures] == [(Reason.OUT_OF_RANGE, 101)]
    assert result.rows.column("_kafka_offset").to_pylist() == [100, 102]


def _micros(at: datetime) -> int:
    return (at.replace(tzinfo=None) - datetime(1970, 1, 1)) // timedelta(microseconds=1)


STAMPS = TableContract(
    schema="lending",
    table="stamps",
    primary_key=("id",),
    columns=(
        Column("id", "int64", "bigint", nullable=False),
        Column("at", "timestamp", "timestamp without time zone"),
        Column("at_ms", "timestamp_millis", "timestamp(3) without time zone"),
        Column("at_tz", "timestamptz", "timestamp with time zone"),
        Column("ats", "array", "timestamp[]", items=Column("element", "timestamp", "timestamp")),
        Column("ats_tz", "array", "timestamptz[]", items=Column("element", "timestamptz", "timestamptz")),
    ),
)


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
def test_timestamps_before_the_gregorian_calendar_read_through_java_get_their_dates_back(native_reader: bool) -> None:
    """Debezium sends the instant of the Julian date for a timestamp before 1582-10-15 (what java.sql.Timestamp
    makes of PostgreSQL's fields) in a snapshot's reads, and in a timestamp array whenever it reads one; a streamed
    change's other timestamps, and a timestamptz array's elements (their text), arrive as PostgreSQL holds them."""
    held = [datetime(1000, 1, 1, 12, 0, 0, 500_000), datetime(1582, 10, 4, 23, 59, 59), datetime(2, 3, 1)]
    julian = [datetime(1000, 1, 6, 12, 0, 0, 500_000), datetime(1582, 10, 14, 23, 59, 59), datetime(2, 2, 27)]
    unchanged = [datetime(1582, 10, 15), datetime(2026, 5, 6, 5, 8, 9)]  # Gregorian in java.util too

    def event(op: str, key: int, sent: datetime, in_array: list[datetime | None], in_zoned: datetime) -> bytes:
        row = {
            "id": key,
            "at": _micros(sent),
            "at_ms": _micros(sent) // 1000,
            "at_tz": sent.isoformat() + "Z",
            "ats": [None if a is None else _micros(a) for a in in_array],
            "ats_tz": [in_zoned.isoformat() + "Z", None],
        }
        return _event(op, after=row)

    pairs = list(enumerate(zip([*julian, *unchanged], [*held, *unchanged], strict=True)))
    values = [event("r", i, sent, [sent, None], want) for i, (sent, want) in pairs]
    values += [event("c", 10 + i, want, [sent], want) for i, (sent, want) in pairs]  # the array still as read
    values.append(_event("r", after={"id": 20, "at": None, "at_ms": None, "at_tz": None, "ats": None, "ats_tz": None}))
    decoder = JsonEventDecoder(STAMPS, native_reader=native_reader)
    result = decoder.decode(TOPIC, MessageBatch.of(_messages(values)), ingested_at_us=0)
    assert result.failures == []
    columns = ["id", "at", "at_ms", "at_tz", "ats", "ats_tz"]
    rows = {r["id"]: r for r in result.rows.select(columns).to_pylist()}
    for key, want in enumerate([*held, *unchanged]):
        utc = want.replace(tzinfo=UTC)
        assert [rows[key][c] for c in columns[1:]] == [want, want, utc, [want, None], [utc, None]], key
        assert [rows[10 + key][c] for c in ("at", "at_tz", "ats", "ats_tz")] == [want, utc, [want], [utc, None]], key
    assert [rows[20][c] for c in columns[1:]] == [None] * 5


ARRAYS = TableContract(
    schema="lending",
    table="limits",
    primary_key=("limit_id",),
    columns=(
        Column("limit_id", "int64", "bigint", nullable=False),
        Column("steps", "array", "numeric[]", items=Column("element", "variable_decimal", "numeric")),
    ),
)


def _limit_event(limit_id: int, steps: list[dict[str, Any]], before: list[dict[str, Any]] | None = None) -> bytes:
    """An insert of ``steps`` into :data:`ARRAYS`' table; with ``before``, an update from those steps."""
    source = {"ts_ms": 1_795_387_780_402, "lsn": 1, "txId": 1, "snapshot": "false"}
    after = {"limit_id": limit_id, "steps": steps}
    if before is None:
        return json.dumps({"op": "c", "after": after, "source": source}).encode()
    image = {"limit_id": limit_id, "steps": before}
    return json.dumps({"op": "u", "before": image, "after": after, "source": source}).encode()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("step", "reason"),
    [
        ({"scale": 40, "value": "AQ=="}, Reason.WRONG_TYPE),  # 1E-40 needs more places than the lake keeps
        ({"scale": -(10**7), "value": "AQ=="}, Reason.OUT_OF_RANGE),
        ({"scale": 1_297_587_212, "value": "AQ=="}, Reason.OUT_OF_RANGE),
        ({"scale": 0, "value": base64.b64encode(b"\x7f" + b"\xff" * 4_000).decode()}, Reason.WRONG_TYPE),
    ],
)
def test_an_array_element_the_lake_decimal_cannot_hold_is_refused(step: dict[str, Any], reason: str) -> None:
    values: list[bytes | None] = [
        _limit_event(1, [_vsd("1.5")]),
        _limit_event(2, [_vsd("2"), step]),
        _limit_event(3, []),
    ]
    result = JsonEventDecoder(ARRAYS).decode(TOPIC, MessageBatch.of(_messages(values)), ingested_at_us=0)
    assert [(f.reason, f.message.offset()) for f in result.failures] == [(reason, 101)]
    assert result.rows.column("steps").to_pylist() == [[Decimal("1.5")], []]


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
@pytest.mark.parametrize("image", ["after", "before"])
@pytest.mark.parametrize(
    "step",
    [{"scale": 1, "value": "Dw==", "unit": "ms"}, {"scalm": 1, "value": "Dw=="}],
    ids=["extra-key", "misspelled-key"],
)
def test_an_element_with_a_key_its_struct_has_no_place_for_is_refused_on_both_paths(
    step: dict[str, Any], image: str, native_reader: bool
) -> None:
    """Inside a row image a struct's unknown key is refused wherever the struct is — a column's own or an array
    element's, in the image that lands or the other one — as a wrong type: a record is a row or a DLQ record
    alike whichever path reads it."""
    bad = _limit_event(2, [_vsd("2"), step], before=[_vsd("1")])
    if image == "before":
        bad = _limit_event(2, [_vsd("2")], before=[_vsd("1"), step])
    values: list[bytes | None] = [_limit_event(1, [_vsd("1.5")]), bad, _limit_event(3, [])]
    decoder = JsonEventDecoder(ARRAYS, native_reader=native_reader)
    result = decoder.decode(TOPIC, MessageBatch.of(_messages(values)), ingested_at_us=0)
    assert [(f.reason, f.message.offset()) for f in result.failures] == [(Reason.WRONG_TYPE, 101)]
    assert result.rows.column("limit_id").to_pylist() == [1, 3]


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
def test_a_column_named_like_a_decimal_with_a_wrong_type_is_a_wrong_type(native_reader: bool) -> None:
    """The DLQ reason is what the value did, not a word of the column's name."""
    contract = TableContract(
        schema="lending",
        table="rates",
        primary_key=("rate_id",),
        columns=(Column("rate_id", "int64", "bigint", nullable=False), Column("decimal_places", "int32", "integer")),
    )
    source = {"ts_ms": 1_795_387_780_402, "lsn": 1, "txId": 1, "snapshot": "false"}
    values: list[bytes | None] = [
        json.dumps({"op": "c", "after": {"rate_id": n, "decimal_places": places}, "source": source}).encode()
        for n, places in ((1, 2), (2, "two"), (3, 4))
    ]
    result = JsonEventDecoder(contract, native_reader=native_reader).decode(
        TOPIC, MessageBatch.of(_messages(values)), ingested_at_us=0
    )
    assert [(f.reason, f.message.offset()) for f in result.failures] == [(Reason.WRONG_TYPE, 101)]
    assert result.rows.column("decimal_places").to_pylist() == [2, 4]


@pytest.mark.parametrize(
    ("arrow_error", "reason"),
    [
        ("Failed to convert JSON to decimal128(10, 2): 1.234 requires scale 3", Reason.DECIMAL_OVERFLOW),
        ("The string '1e80' cannot be represented as decimal256", Reason.DECIMAL_OVERFLOW),
        ("Rescaling Decimal128 value would cause data loss", Reason.DECIMAL_OVERFLOW),
        ("The string 'x1e-9' is not a valid decimal128 number", Reason.WRONG_TYPE),
        ("The string 'twelve' is not a valid Decimal256 number", Reason.WRONG_TYPE),
        ("Empty string cannot be converted to decimal128", Reason.WRONG_TYPE),
        ("JSON parse error: Column(/after/decimal_places) changed from number to string in row 0", Reason.WRONG_TYPE),
        ("JSON parse error: Column(/after/amount) changed from number to string in row 0", Reason.WRONG_TYPE),
        (
            "column amount read as struct<scale: int32>, not decimal128(10, 2): a key it has no place for",
            Reason.WRONG_TYPE,
        ),
    ],
)
def test_a_refused_value_is_a_decimal_overflow_only_where_arrow_says_so(arrow_error: str, reason: str) -> None:
    (message,) = _messages([_event("c", after=_row(1))])
    assert json_batch._classify(message, _event("c", after=_row(1)), arrow_error).reason == reason


TIMES = TableContract(
    schema="lending",
    table="schedules",
    primary_key=("schedule_id",),
    columns=(
        Column("schedule_id", "int64", "bigint", nullable=False),
        Column("stamps", "array", "timestamp(3)[]", items=Column("element", "timestamp_millis", "timestamp(3)")),
        Column("slots", "array", "time[]", items=Column("element", "time", "time")),
    ),
)


def _schedule(schedule_id: int, stamps: list[int | None] | None, slots: list[int | None] | None) -> bytes:
    source = {"ts_ms": 1_795_387_780_402, "lsn": 1, "txId": 1, "snapshot": "false"}
    after = {"schedule_id": schedule_id, "stamps": stamps, "slots": slots}
    return json.dumps({"op": "c", "after": after, "source": source}).encode()


def test_arrays_of_times_are_converted_like_columns_of_them() -> None:
    values: list[bytes | None] = [
        _schedule(1, [1_777_975_872_123, None], [61_200_000_000]),
        _schedule(2, None, []),
        _schedule(3, [0, 9_223_372_036_825_200_000], None),  # `infinity` in a timestamp(3)[]
        _schedule(4, [], [1, 86_400_000_001]),
        _schedule(5, [-1], [None, 0]),
    ]
    result = JsonEventDecoder(TIMES).decode(TOPIC, MessageBatch.of(_messages(values)), ingested_at_us=0)
    assert [(f.reason, f.message.offset()) for f in result.failures] == [
        (Reason.OUT_OF_RANGE, 102),
        (Reason.OUT_OF_RANGE, 103),
    ]
    assert "stamps" in result.failures[0].detail
    assert "slots" in result.failures[1].detail
    rows = result.rows.to_pylist()
    assert [r["schedule_id"] for r in rows] == [1, 2, 5]
    assert rows[0]["stamps"] == [datetime(2026, 5, 5, 10, 11, 12, 123000), None]  # milliseconds on the wire
    assert rows[0]["slots"] == [time(17, 0)]
    assert (rows[1]["stamps"], rows[1]["slots"]) == (None, [])
    assert (rows[2]["stamps"], rows[2]["slots"]) == ([datetime(1969, 12, 31, 23, 59, 59, 999000)], [None, time(0)])


@pytest.mark.parametrize(
    ("column", "sentinel"),
    [
        ("opened_on", -2_147_472_692),  # date 'infinity' as Debezium sends it
        ("reviewed_at", 9_223_372_036_825_200_000),  # timestamp 'infinity'
        ("settled_at", -9_223_372_036_832_400),  # timestamp(3) '-infinity'
        ("opened_on", 2_932_897),  # 10000-01-01
        ("reviewed_at", -62_135_596_800_000_001),  # a microsecond before year 1
    ],
)
def test_infinity_and_years_beyond_9999_are_refused_not_stored(column: str, sentinel: int) -> None:
    result = _decode([_event("c", after=_row(1)), _event("c", after=_row(2, **{column: sentinel}))])
    assert [row["account_id"] for row in result.rows.to_pylist()] == [1]
    (failure,) = result.failures
    assert failure.reason == Reason.OUT_OF_RANGE
    assert f"column {column}" in failure.detail
    assert "years 1-9999" in failure.detail


@pytest.mark.parametrize("native_reader", [True, False])
def test_a_timestamptz_outside_years_1_to_9999_is_out_of_range_and_other_text_a_wrong_type(
    native_reader: bool,
) -> None:
    """Debezium sends a timestamptz's infinity as a word where the ISO-8601 instant belongs, an array's -infinity as
    an instant of year +292269055, and a year before 1 as year 0 or a signed one; each reader takes year 0."""
    stamps = {
        1: "0001-01-01T00:00:00Z",
        2: "infinity",
        3: "-infinity",
        4: "0000-06-01T00:00:00Z",  # 1 BC
        5: "-0044-03-15T12:00:00Z",
        6: "+10000-01-01T00:00:00Z",
        7: "+292269055-12-02T23:00:00.000000Z",
        8: "9999-12-31T23:59:59.999999Z",
        9: "yesterday",
        10: "Infinity",  # not PostgreSQL's spelling
    }
    values = [_event("c", after=_row(key, created_at=stamp)) for key, stamp in stamps.items()]
    values[2] = _event("u", before=_row(3, created_at="-infinity"), after=_row(3))
    result = _decode(values, native_reader=native_reader)
    assert [row["account_id"] for row in result.rows.to_pylist()] == [1, 8]
    why = "is outside years 1-9999 (PostgreSQL's infinity arrives so)"
    by_key = {f.message.offset() - 99: (f.reason, f.detail) for f in result.failures}
    assert by_key == {
        2: (Reason.OUT_OF_RANGE, f"column created_at: 'infinity' {why}"),
        3: (Reason.OUT_OF_RANGE, f"column created_at: '-infinity' {why}"),
        4: (Reason.OUT_OF_RANGE, f"column created_at: -62154086400000000 {why}"),
        5: (Reason.OUT_OF_RANGE, f"column created_at: '-0044-03-15T12:00:00Z' {why}"),
        6: (Reason.OUT_OF_RANGE, f"column created_at: '+10000-01-01T00:00:00Z' {why}"),
        7: (Reason.OUT_OF_RANGE, f"column created_at: '+292269055-12-02T23:00:00.000000Z' {why}"),
        9: by_key[9],
        10: by_key[10],
    }
    assert (by_key[9][0], by_key[10][0]) == (Reason.WRONG_TYPE, Reason.WRONG_TYPE)


def test_each_refused_record_names_its_own_value() -> None:
    """Several records of a batch refused by one check: each DLQ detail holds the record's own value, not the
    first one the batch met."""
    values = [
        _event("c", after=_row(1, opened_on=2_932_897)),
        _event("c", after=_row(2, opened_on=-2_147_472_692)),
        _event("c", after=_row(3, rate=_vsd("1" + "0" * 100))),
        _event("c", after=_row(4, rate=_vsd("1e-100"))),
        _event("c", after=_row(5, tags=["x"], cutoff=86_400_000_000)),
        _event("c", after=_row(6)),
    ]
    result = _decode(values)
    assert [row["account_id"] for row in result.rows.to_pylist()] == [6]
    details = {f.message.offset() - 99: f.detail for f in result.failures}
    assert details[1].startswith("column opened_on: 2932897 is outside years 1-9999")
    assert details[2].startswith("column opened_on: -2147472692 is outside years 1-9999")
    assert "333 bits at scale 0" in details[3]
    assert details[4] == "column rate: a value with 100 decimal places does not fit decimal(76, 38)"
    assert details[5] == "column cutoff: 86400000000 µs is not a time of day before 24:00:00"


def test_the_first_and_last_day_of_years_1_to_9999_are_kept() -> None:
    edges = [
        _row(1, opened_on=-719_162, reviewed_at=-62_135_596_800_000_000, settled_at=-62_135_596_800_000),
        _row(2, opened_on=2_932_896, reviewed_at=253_402_300_799_999_999, settled_at=253_402_300_799_999),
    ]
    result = _decode([_event("c", after=row) for row in edges])
    assert result.failures == []
    first, last = result.rows.to_pylist()
    assert (first["opened_on"], first["reviewed_at"]) == (date(1, 1, 1), datetime(1, 1, 1))
    assert (last["opened_on"], last["reviewed_at"]) == (date(9999, 12, 31), datetime(9999, 12, 31, 23, 59, 59, 999999))
    assert last["settled_at"] == datetime(9999, 12, 31, 23, 59, 59, 999000)


_NUMBER, _BEFORE, _AFTER = b"0123456789.+-", b'"{}[:, \t\r\n', b'"}], \t\r\n'
# An exponent Arrow could read: in a whole token that is a bare number or all of a string's text
_READABLE_EXPONENT = re.compile(
    rb"(?:^|(?<=[\x22{}\[:, \t\r\n]))[0-9.+-]*[eE][+-]?[0-9]{7,}(?:$|(?=[\x22}\], \t\r\n]))|\\u"
)


def _exponent_screen(value: bytes, following: bytes) -> bool:
    """The exponent screen's rule read byte by byte: ``e``/``E``, maybe a sign, seven digits (read on into
    ``following``, the next value's bytes, as the screen's scan of the batch does), in a token whose nearest
    byte before that no number holds may begin a number and whose first byte after the digits may end one —
    within 32 bytes and the value, else the token is kept; or a backslash-u."""
    text = value + following
    if b"\\u" in text[: len(value) + 1]:
        return True
    for at in (i for i in range(len(value)) if value[i] in b"eE"):
        digits = at + 1 + (text[at + 1 : at + 2] in (b"+", b"-"))
        if len(text[digits : digits + 7]) < 7 or not text[digits : digits + 7].isdigit():
            continue
        start = at - 1
        while start >= 0 and at - start <= 32 and value[start] in _NUMBER:
            start -= 1
        stop = digits + 1
        while stop < len(value) and stop - digits <= 32 and value[stop] in b"0123456789":
            stop += 1
        begins = start < 0 or at - start > 32 or value[start] in _BEFORE
        if begins and (stop >= len(value) or stop - digits > 32 or value[stop] in _AFTER):
            return True
    return False


@pytest.mark.parametrize("scan_bytes", [1, 7, 64, json_batch._SCAN_BYTES])
def test_the_exponent_and_depth_screens_agree_with_a_plain_scan_of_every_value(
    scan_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vectorised screens agree with a byte-by-byte reading, on seeded random values built from the bytes
    that matter (digits, e/E, signs, a dot, backslash-u, brackets, a letter, quotes, commas, a colon): values
    of every length, empty ones and values at the batch's edges included, and the batch's bytes scanned in
    pieces of several sizes (a marker and what follows it may straddle two). The exponent screen never misses
    an exponent Arrow could read as a number's."""
    monkeypatch.setattr(json_batch, "_SCAN_BYTES", scan_bytes)
    rng = random.Random(20_261_202)
    alphabet = b"0123456789" * 5 + b'eE+-.\\u{[}]a":, '  # digits weigh most: seven in a row must be common
    values = [bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 40))) for _ in range(3_000)]
    column = pa.array(values, type=pa.large_binary())
    joined = b"".join(values)
    ends = np.cumsum([len(v) for v in values])
    expected = np.array([_exponent_screen(v, joined[end : end + 9]) for v, end in zip(values, ends, strict=True)])
    readable = np.array([_READABLE_EXPONENT.search(v) is not None for v in values])
    broad = np.array([re.search(rb"[eE][+-]?[0-9]{7}|\\u", v) is not None for v in values])
    # the sample holds every case: readable exponents (50-odd without a backslash-u), tokens kept for
    # reaching their value's edge, and exponents the token rule clears
    assert 50 < readable.sum() < expected.sum() - 30 < broad.sum() - 60
    for flagged, low, high in (
        (json_batch._maybe_huge_exponents(column), 0, 3_000),
        (json_batch._maybe_huge_exponents(column.slice(7, 500)), 7, 507),
    ):
        assert (flagged == expected[low:high]).all()
        assert (flagged >= readable[low:high]).all()  # never a miss
    openers = np.array([v.count(b"{") + v.count(b"[") for v in values])
    assert (json_batch._opener_counts(column) == openers).all()
    assert (json_batch._opener_counts(column.slice(11, 300)) == openers[11:311]).all()


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        (b'"TX-80e3498185"', False),  # hex ids and digests: a letter begins or ends the token
        (b'"c1e6852742"', False),
        (b'"9f2e12345678ab"', False),
        (b'"deadbeef-0e1234567a"', False),
        (b"1e1234567", True),  # a bare number
        (b"[0.5E-0001234]", True),
        (b'"1e1234567"', True),  # all of a string's text, as a decimal column may carry it
        (b'"-12.5e+1234567"', True),
        (b'" 1e1234567 "', True),  # Arrow refuses it, but whitespace may bound a number: kept for the check
        (b'"' + b"9" * 40 + b'e1234567"', True),  # a token longer than the screen looks: kept
    ],
)
def test_the_exponent_screen_passes_text_that_cannot_be_a_number(text: bytes, flagged: bool) -> None:
    """An exponent inside text Arrow's decimal conversion refuses unread (hex ids: one in ~430 positions of a
    digest is an ``e`` and seven digits) is not sent to the exact check, which parses the whole value."""
    value = b'{"a":' + text + b',"b":1}'
    column = pa.array([b'{"z":"x"}', value, b'{"z":"y"}'], type=pa.large_binary())
    assert json_batch._maybe_huge_exponents(column).tolist() == [False, flagged, False]


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
@pytest.mark.parametrize(
    "value",
    [
        _event("c", after=_row(1)).replace(b'"table":"accounts"', b'"table":"accounts","table":null'),
        _event("c", after=_row(1)).replace(b'"db":"lending"', b'"db":"lending","db":"other"'),
        _event("c", after=_row(1)).replace(b'"transaction":null', b'"transaction":null,"transaction":1'),
    ],
    ids=["source-ignored-key", "source-ignored-key-same-type", "top-level-ignored-key"],
)
def test_a_key_given_twice_is_refused_on_both_paths_even_where_it_is_ignored(value: bytes, native_reader: bool) -> None:
    """A duplicate key, even one no column reads, is refused by Arrow's reader; the native reader refuses it too,
    so a record is a row or a DLQ record whichever path (and whichever batch) reads it."""
    result = _decode([_event("c", after=_row(2)), value], native_reader=native_reader)
    assert result.rows.num_rows == 1
    (failure,) = result.failures
    assert failure.message.offset() == 101
    assert "twice" in failure.detail or "duplicate" in failure.detail


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
def test_a_wrapper_with_whitespace_around_its_keys_is_unwrapped_on_both_paths(native_reader: bool) -> None:
    spaced = b'{ "schema" : {"type":"struct","optional":false} , "payload" : ' + _event("c", after=_row(7)) + b" }\n"
    result = _decode([spaced, _wrapped(_event("c", after=_row(8)))], native_reader=native_reader)
    assert result.failures == []
    assert result.rows.column("account_id").to_pylist() == [7, 8]


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
def test_a_wrapper_member_after_the_payload_is_skipped_on_both_paths(native_reader: bool) -> None:
    """JsonConverter writes the payload last; a wrapper with a member after it is read alike on both paths: the
    member is checked as JSON and skipped, whatever it holds (here what looks like another envelope's end)."""
    late = (
        _wrapped(_event("c", after=_row(7)))[:-1] + b',"source":{"table":"other"},"op":"d","n":' + b"9" * 5_000 + b"}"
    )
    result = _decode([late, _wrapped(_event("c", after=_row(8)))], native_reader=native_reader)
    assert result.failures == []
    assert result.rows.column("account_id").to_pylist() == [7, 8]
    assert result.rows.column("_op").to_pylist() == ["c", "c"]


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
@pytest.mark.parametrize(
    "value",
    [
        _wrapped(_event("c", after=_row(7)))[:-1] + b',"payload":' + _event("c", after=_row(9)) + b"}",
        _wrapped(_event("c", after=_row(7)), schema=b'{"type":"struct",}'),
        _wrapped(_event("c", after=_row(7)))[:-1] + b',"trailer":[1,}',
    ],
    ids=["payload-twice", "schema-not-json", "member-after-not-json"],
)
def test_a_wrapper_that_is_not_one_well_formed_object_is_refused_on_both_paths(
    value: bytes, native_reader: bool
) -> None:
    result = _decode([_wrapped(_event("c", after=_row(6))), value], native_reader=native_reader)
    assert [f.message.offset() for f in result.failures] == [101]
    assert result.rows.column("account_id").to_pylist() == [6]


_UNINFERABLE = {"mixed-list": b'[1,"a"]', "mixed-objects": b'{"a":[{"b":1},{"b":"x"}]}', "huge-exponent": b"1e999"}


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
@pytest.mark.parametrize("where", ["top-level", "source"])
@pytest.mark.parametrize("unknown", sorted(_UNINFERABLE))
def test_a_member_no_column_reads_is_ignored_on_both_paths_whatever_it_holds(
    unknown: str, where: str, native_reader: bool
) -> None:
    """A member the envelope has no place for (outside the row images) is ignored by the native reader;
    Arrow's reader infers it, and refuses what it cannot infer: that record is read again without it, so
    it is the same row whichever path reads it."""
    hostile = _UNINFERABLE[unknown]
    plain = _event("c", after=_row(1))
    if where == "top-level":
        value = plain.replace(b'"op":"c"', b'"op":"c","unknown_1":' + hostile)
    else:
        value = plain.replace(b'"db":"lending"', b'"db":"lending","version":' + hostile)
    assert value != plain
    result = _decode([value, _event("c", after=_row(2))], native_reader=native_reader)
    assert result.failures == []
    expected = _decode([plain, _event("c", after=_row(2))], native_reader=native_reader).rows
    assert result.rows.drop_columns(["_ingested_at"]).equals(expected.drop_columns(["_ingested_at"]))


FLOATS = TableContract(
    schema="lending",
    table="accounts",
    primary_key=("account_id",),
    columns=(
        Column("account_id", "int64", "bigint", nullable=False),
        Column("single", "float32", "real"),
        Column("double", "float64", "double precision"),
        Column("series", "array", "double precision[]", items=Column("element", "float64", "double precision")),
        Column("notes", "string", "text"),
    ),
)


def _float_event(account_id: int, single: str, double: str, series: str, notes: str = '"NaN"') -> bytes:
    """An insert as Kafka Connect's JsonConverter writes it: a float's NaN and infinities as strings."""
    after = f'{{"account_id":{account_id},"single":{single},"double":{double},"series":{series},"notes":{notes}}}'
    return _event("c", after={"account_id": 0}).replace(b'{"account_id":0}', after.encode())


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
def test_a_floats_nan_and_infinities_are_carried_on_both_paths(native_reader: bool) -> None:
    nan, inf = float("nan"), float("inf")
    values = [
        _float_event(1, '"NaN"', '"-Infinity"', '["Infinity",1.5,null,"NaN"]'),
        _float_event(2, '"Infinity"', '"NaN"', "[]"),
        _float_event(3, "0.5", "2.5", '["-Infinity"]', notes='"Infinity"'),
        _float_event(4, '"nan"', "1.0", "[]"),  # no spelling JsonConverter writes: refused, not guessed
        _float_event(5, "1.0", "1.0", '["Infinity ","NaN"]'),
    ]
    decoder = JsonEventDecoder(FLOATS, native_reader=native_reader)
    result = decoder.decode(TOPIC, MessageBatch.of(_messages(values)), ingested_at_us=1_795_387_790_000_000)
    rows = {r["account_id"]: r for r in result.rows.to_pylist()}
    expected = {
        1: (nan, -inf, [inf, 1.5, None, nan], "NaN"),
        2: (inf, nan, [], "NaN"),
        3: (0.5, 2.5, [-inf], "Infinity"),  # a text column keeps the words as text
    }
    assert sorted(rows) == sorted(expected)
    for key, (single, double, series, notes) in expected.items():
        found = rows[key]
        assert _same_value([found["single"], found["double"], found["series"]], [single, double, series]), found
        assert found["notes"] == notes
    assert sorted(int(f.message.offset() or 0) for f in result.failures) == [103, 104]
    assert {f.reason for f in result.failures} == {Reason.WRONG_TYPE}


def _forms() -> list[tuple[bytes | None, int | None, str | None]]:
    """Values of every form a batch may mix, each with the account it decodes to (None: no row) and the
    reason it is refused (None: not refused)."""
    pretty = json.dumps(json.loads(_event("c", after=_row(3)).decode()), indent=1).encode()
    return [
        (_event("c", after=_row(1)), 1, None),
        (None, None, None),  # a tombstone
        (_wrapped(_event("c", after=_row(2))), 2, None),
        (pretty, 3, None),  # newlines: read on its own
        (b" \t" + _event("c", after=_row(4)), 4, None),  # whitespace before the object
        (b'{ "schema" : {} , "payload" : ' + _event("c", after=_row(5)) + b"}", 5, None),
        (b'{"schema_version":1}', None, Reason.UNKNOWN_OP),  # a first member only named like the wrapper's
        (b"null", None, Reason.MALFORMED_JSON),
        (b"{garbage", None, Reason.MALFORMED_JSON),
        (b"{}", None, Reason.UNKNOWN_OP),
        (b"{" + b"[" * 200 + b"]" * 200 + b"}", None, Reason.TOO_DEEP),
        (b'{"op":"c","after":{"account_id":6,"name":"\xff"}}', None, Reason.INVALID_UTF8),
        (_event("c", after=_row(7)), 7, None),
    ]


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
@pytest.mark.parametrize("seed", range(6))
def test_a_batch_mixing_every_form_keeps_each_values_fate_and_offset(native_reader: bool, seed: int) -> None:
    """Wherever the unusual values fall in a batch (the Arrow path clears the usual ones over the batch's bytes
    and looks at the rest one at a time), each value is a row at its own offset or a failure naming it."""
    forms = _forms() * 2
    random.Random(seed).shuffle(forms)
    result = _decode([value for value, _, _ in forms], native_reader=native_reader)
    rows = [(account, 100 + i) for i, (_, account, _) in enumerate(forms) if account is not None]
    refused = [(reason, 100 + i) for i, (_, _, reason) in enumerate(forms) if reason is not None]
    assert sorted(
        zip(result.rows.column("account_id").to_pylist(), result.rows.column("_kafka_offset").to_pylist(), strict=True)
    ) == sorted(rows)
    assert sorted((f.reason, f.message.offset()) for f in result.failures) == sorted(refused)
    assert result.tombstones == 2


def test_values_with_float_words_are_read_with_the_batch_on_arrows_path() -> None:
    """Arrow's reader refuses a float column's word as Kafka Connect writes it; such values are made bare and
    read with the rest of the batch (not alone, after a bisection), and the rows are the native reader's."""
    values = [
        _float_event(i, '"NaN"' if i % 3 == 0 else "0.5", '"-Infinity"' if i % 5 == 0 else "1.5", "[]", notes='"x"')
        for i in range(1, 61)
    ]
    values.append(_float_event(61, "0.5", "1.5", "[]", notes='"Infinity"'))  # the word as text, not a float
    rows = {}
    for native_reader in (True, False):
        decoder = JsonEventDecoder(FLOATS, native_reader=native_reader)
        result = decoder.decode(TOPIC, MessageBatch.of(_messages(values)), ingested_at_us=1_795_387_790_000_000)
        assert result.failures == []
        rows[native_reader] = result.rows.drop_columns(["_ingested_at"]).to_pylist()
    assert len(rows[False]) == 61
    assert all(_same_value(list(a.values()), list(b.values())) for a, b in zip(rows[False], rows[True], strict=True))
    assert rows[False][-1]["notes"] == "Infinity"

    decoder = JsonEventDecoder(FLOATS, native_reader=False)
    batch = MessageBatch.of(_messages(values))
    screened = decoder._screen(batch.values)
    assert screened.float_words is not None
    assert np.flatnonzero(screened.float_words).tolist() == [
        i - 1 for i in range(1, 62) if i % 3 == 0 or i % 5 == 0 or i == 61
    ]
    failures: list[Any] = []
    bulk, payloads, alone, unproven = decoder._sorted_out(
        batch, np.flatnonzero(screened.float_words), screened, failures
    )
    assert (failures, alone, unproven) == ([], [], [])
    assert bulk == np.flatnonzero(screened.float_words).tolist()
    assert all(b'"NaN"' not in payloads[i] and b'"-Infinity"' not in payloads[i] for i in bulk[:-1])
    assert b'"notes":"Infinity"' in payloads.get(60, values[60])  # a text column's word stays text


@pytest.mark.parametrize("window", [(0, 40), (3, 20), (17, 23)])
def test_float_words_are_found_wherever_they_sit(window: tuple[int, int]) -> None:
    rng = random.Random(20_261_205)
    pieces = [b'"NaN"', b'"Infinity"', b'"-Infinity"', b"NaN", b"Infinity", b'"', b"x", b"1"]
    values = [b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 5))) for _ in range(40)]
    words = re.compile(rb'"NaN"|"-?Infinity"')
    start, stop = window
    column = pa.array(values, type=pa.large_binary()).slice(start, stop - start)
    expected = [words.search(v) is not None for v in values[start:stop]]
    found = json_batch._float_words(column)
    assert (found.tolist() if found is not None else [False] * len(expected)) == expected


def _rate_texts(rng: random.Random) -> tuple[object, object]:
    """A ``rate`` ``{scale, value}`` pair of some form: mostly what Debezium sends (a scale near the column's,
    the fewest bytes of the unscaled value), else wider values, far scales, padding and text base64 does not
    hold as Debezium writes it."""
    width = rng.choice([1, 1, 2, 3, 4, 5, 6, 7, 7, 8, 9, 12, 16, 20])
    unscaled = rng.choice([0, -1, 2 ** (8 * width - 1) - 1, -(2 ** (8 * width - 1)), rng.getrandbits(8 * width)])
    unscaled -= 2 ** (8 * width) if unscaled >= 2 ** (8 * width - 1) else 0
    raw = unscaled.to_bytes(width, "big", signed=True)
    text: object = base64.b64encode(raw).decode()
    scale: object = rng.choice([*range(-3, 24), 30, 37, 38, 39, 45, 60, 16_383, 16_384, -(10**7)])
    match rng.randrange(12):
        case 0:
            text = str(text).rstrip("=")  # padding left off
        case 1:
            text = rng.choice(["", "A===", "AQ=A", "=AQ=", "AQ==AQ==", "AQ\u00e9=", " AQ=", "AQ== ", "A*Q="])
        case 2:
            text = base64.b64encode(b"\x00" * rng.randrange(1, 4) + raw).decode()  # sign bytes Debezium spares
        case 3:
            scale = None
        case 4:
            text = None
    return scale, text


def _expected_rate(scale: object, text: object) -> tuple[str | None, Decimal | None]:
    """What ``rate`` (an unconstrained numeric, ``decimal(76, 38)`` in the lake) becomes, by Decimal arithmetic:
    the refusal's reason or the value."""
    if not isinstance(scale, int) or not isinstance(text, str):
        return Reason.DECIMAL_OVERFLOW, None
    try:  # the text is read first: one that holds no integer is refused as that, whatever its scale
        raw = base64.b64decode(text)
    except ValueError:  # binascii.Error, or text that is not ASCII
        return Reason.DECIMAL_OVERFLOW, None
    if abs(scale) > 16_383:
        return Reason.OUT_OF_RANGE, None
    with localcontext() as context:
        context.prec = 200
        value = Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-scale)
        fits = value == value.quantize(Decimal(1).scaleb(-38)) and abs(value) < Decimal(10) ** 38
    return (None, value) if fits else (Reason.DECIMAL_OVERFLOW, None)


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
@pytest.mark.parametrize("seed", range(3))
def test_unconstrained_numerics_of_every_form_match_decimal_arithmetic(native_reader: bool, seed: int) -> None:
    """A batch of ``{scale, value}`` pairs — most read and rescaled for the whole column at once, the rest one at
    a time — gives each row the value Decimal arithmetic gives, and each refusal its reason, at its offset."""
    rng = random.Random(seed)
    pairs = [_rate_texts(rng) for _ in range(1_500)]
    values = [
        _event("c", after=_row(i, rate={"scale": scale, "value": text}))
        for i, (scale, text) in enumerate(pairs, start=1)
    ]
    result = _decode(values, native_reader=native_reader)
    expected = [_expected_rate(scale, text) for scale, text in pairs]
    rows = {row["account_id"]: row["rate"] for row in result.rows.select(["account_id", "rate"]).to_pylist()}
    assert rows == {i: value for i, (reason, value) in enumerate(expected, start=1) if reason is None}
    assert sorted((f.message.offset(), f.reason) for f in result.failures) == [
        (99 + i, reason) for i, (reason, _) in enumerate(expected, start=1) if reason is not None
    ]


def _blob_text(rng: random.Random) -> str | None:
    """A ``blob`` (bytea) as it may arrive: base64 of 0-40 bytes or of a few hundred, else a character off, the
    TOAST placeholder or null."""
    text = base64.b64encode(rng.randbytes(rng.choice([rng.randrange(0, 41), rng.randrange(150, 400)]))).decode()
    match rng.randrange(10):
        case 0 if text:
            at = rng.randrange(len(text))
            return text[:at] + rng.choice("=A/+\u00e9 *-_") + text[at + rng.randrange(0, 2) :]
        case 1:
            return rng.choice([None, base64.b64encode(UNAVAILABLE_VALUE.encode()).decode()])
    return text


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
@pytest.mark.parametrize("seed", range(3))
def test_bytea_of_every_form_is_what_b64decode_reads(native_reader: bool, seed: int) -> None:
    """A batch of ``blob`` texts — most decoded for the whole column at once, the rest one at a time — gives
    each row the bytes ``base64.b64decode`` reads, null and listed as unavailable for the TOAST placeholder,
    and a wrong_type refusal for text that is not base64, at its offset."""
    rng = random.Random(seed)
    texts = [_blob_text(rng) for _ in range(1_500)]
    result = _decode(
        [_event("c", after=_row(i, blob=t)) for i, t in enumerate(texts, start=1)], native_reader=native_reader
    )
    placeholder = base64.b64encode(UNAVAILABLE_VALUE.encode()).decode()
    expected: dict[int, bytes | None] = {}
    refused = []
    for i, text in enumerate(texts, start=1):
        if text is None or text == placeholder:
            expected[i] = None
            continue
        try:
            expected[i] = base64.b64decode(text, validate=True)
        except ValueError:
            refused.append((99 + i, Reason.WRONG_TYPE))
    rows = result.rows.select(["account_id", "blob", "_unavailable_columns"]).to_pylist()
    assert {row["account_id"]: row["blob"] for row in rows} == expected
    assert {row["account_id"] for row in rows if row["_unavailable_columns"] == ["blob"]} == {
        i for i, text in enumerate(texts, start=1) if text == placeholder
    }
    assert sorted((f.message.offset(), f.reason) for f in result.failures) == refused


TOASTED_ARRAYS = TableContract(
    schema="lending",
    table="series",
    primary_key=("series_id",),
    columns=(
        Column("series_id", "int64", "bigint", nullable=False),
        # elements named as the catalog names them (services/common/contracts/catalog.py)
        Column("counts", "array", "integer[]", items=Column("element", "int32", "int4")),
        Column("totals", "array", "bigint[]", items=Column("element", "int64", "int8")),
        Column("days", "array", "date[]", items=Column("element", "date", "date")),
        Column("ids", "array", "uuid[]", items=Column("element", "uuid", "uuid")),
        Column("blobs", "array", "bytea[]", items=Column("element", "bytes", "bytea")),
        Column("labels", "array", "text[]", items=Column("element", "string", "text")),
    ),
)
# An untouched TOASTed array as Debezium 3.4 sends it (tests/integration/test_source_fidelity.py sees each form)
_PLACEHOLDER_NUMBERS: list[object] = list(UNAVAILABLE_VALUE.encode())
_UNAVAILABLE_ARRAYS: dict[str, list[object]] = {
    "counts": _PLACEHOLDER_NUMBERS,
    "totals": _PLACEHOLDER_NUMBERS,
    "days": _PLACEHOLDER_NUMBERS,
    "ids": ["b68a35a7-17ad-35b3-af2a-ae46edb4545a"],
    "blobs": [base64.b64encode(UNAVAILABLE_VALUE.encode()).decode()],
    "labels": [UNAVAILABLE_VALUE],
}


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
@pytest.mark.parametrize("column", list(_UNAVAILABLE_ARRAYS))
def test_an_untouched_toasted_array_of_each_form_is_null_and_listed(column: str, native_reader: bool) -> None:
    """Debezium sends an untouched TOASTed array as its placeholder in the elements' type (an integer array as the
    placeholder's bytes): null in the lake and listed as unavailable, so silver carries the value forward — not a
    list of numbers, a made-up UUID or the placeholder's bytes. An array that only resembles it is a value."""
    source = {"ts_ms": 1_795_387_780_402, "lsn": 1, "txId": 1, "snapshot": "false"}
    placeholder = _UNAVAILABLE_ARRAYS[column]
    other = {"ids": "b68a35a7-17ad-35b3-af2a-ae46edb4545b", "blobs": "AA==", "labels": "__debezium_available"}
    resembling = [placeholder + placeholder[:1], placeholder[:-1], [*placeholder[:-1], other.get(column, 96)]]
    images: list[dict[str, Any]] = [{"series_id": 1, column: placeholder}] + [
        {"series_id": 2 + i, column: near} for i, near in enumerate(resembling)
    ]
    values = [json.dumps({"op": "u", "after": image, "source": source}).encode() for image in images]
    decoder = JsonEventDecoder(TOASTED_ARRAYS, native_reader=native_reader)
    result = decoder.decode(TOPIC, MessageBatch.of(_messages(values)), ingested_at_us=0)
    assert result.failures == []
    rows = {row["series_id"]: row for row in result.rows.to_pylist()}
    assert (rows[1][column], rows[1]["_unavailable_columns"]) == (None, [column])
    for series_id in (2, 3, 4):
        assert rows[series_id][column] is not None
        assert len(rows[series_id][column]) == len(images[series_id - 1][column])
        assert rows[series_id]["_unavailable_columns"] == []


def test_the_writer_names_arrays_whose_untouched_toast_arrives_null_unless_the_identity_is_full() -> None:
    """Arrays of a type with no placeholder form arrive as NULL when stored out of line and left untouched: a route
    to such a table warns with the remedy, once per contract, and a table whose identity is FULL is not named."""
    contract = replace(
        TOASTED_ARRAYS,
        table="series_more",
        columns=(
            *TOASTED_ARRAYS.columns,
            Column("rates", "array", "numeric[]", items=Column("element", "variable_decimal", "numeric")),
            Column("flags", "array", "boolean[]", items=Column("element", "boolean", "bool")),
            Column("hosts", "array", "inet[]", items=Column("element", "string", "inet")),  # text on the wire
        ),
    )
    assert untouched_toast_arrives_null(contract) == ["rates", "flags", "hosts"]
    assert untouched_toast_arrives_null(TOASTED_ARRAYS) == []
    full = replace(contract, table="series_full", replica_identity="full")
    router = Router("cdcflow", ContractRegistry.of([contract, full]), [], 1 << 20)
    with capture_logs() as logs:
        for topic in ("cdcflow.lending.series_more", "cdcflow.lending.series_full", "cdcflow.lending.series_more"):
            assert router.route(topic).decoder is not None
    warned = [e for e in logs if e["event"] == "writer.untouched_toast_arrives_null"]
    assert [(e["log_level"], e["table"], e["columns"], e["remedy"]) for e in warned] == [
        (
            "warning",
            "lending.series_more",
            ["rates", "flags", "hosts"],
            "ALTER TABLE lending.series_more REPLICA IDENTITY FULL",
        )
    ]


@pytest.mark.parametrize("native_reader", [True, False], ids=["native", "arrow"])
def test_a_text_array_of_more_dimensions_than_declared_is_refused_not_stored(native_reader: bool) -> None:
    """PostgreSQL lets a text[] column hold {{a,b},{c,d}}; Debezium sends each inner array as Java's name for it."""
    values: list[bytes | None] = [
        _event("c", after=_row(1, tags=["[Ljava.lang.String;@209136a9", "[Ljava.lang.String;@41961c5"])),
        _event("c", after=_row(2, tags=["[Lfoo", "[L", "x"])),  # near it, but real text
        _event("c", after=_row(3, tags=["[Ljava.util.UUID;@719d536e"])),
        _event("c", after=_row(4, tags=None)),
    ]
    result = _decode(values, native_reader=native_reader)
    assert [(f.reason, f.message.offset()) for f in result.failures] == [
        (Reason.WRONG_TYPE, 100),
        (Reason.WRONG_TYPE, 102),
    ]
    assert "column tags: an element reads '[Ljava.lang.String;@209136a9', Java's name for an array" in (
        result.failures[0].detail
    )
    assert result.rows.column("account_id").to_pylist() == [2, 4]
    assert result.rows.column("tags").to_pylist() == [["[Lfoo", "[L", "x"], None]
