"""The native JSON → Arrow reader: the same tables as Arrow's own JSON reader, and a clean stop on what it rejects."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pj
import pytest

from services.common.debezium._jsonarrow import Reader, ReaderError
from services.common.debezium.arrow_reader import VARIABLE_SCALE, JsonArrowReader, UnsupportedSchemaError

ITEM = pa.struct([("n", pa.int32()), ("s", pa.string())])
SCHEMA = pa.schema(
    [
        ("flag", pa.bool_()),
        ("i8", pa.int8()),
        ("i16", pa.int16()),
        ("i32", pa.int32()),
        ("i64", pa.int64()),
        ("f32", pa.float32()),
        ("f64", pa.float64()),
        ("text", pa.string()),
        ("amount", pa.decimal128(20, 2)),
        ("tiny", pa.decimal128(5, 5)),
        ("at", pa.timestamp("us", tz="UTC")),
        ("tags", pa.list_(pa.string())),
        ("items", pa.list_(ITEM)),
        ("image", pa.struct([("id", pa.int64()), ("name", pa.string()), ("nested", ITEM)])),
    ]
)
TEXTS = [
    "",
    "plain",
    'quote " and \\ backslash',
    "tab\tnew\nline\r/",
    "é ü ß",
    "日本語",
    "emoji 🚀 here",
    "\u0001\u001f",
]


def _arrow(lines: list[bytes], schema: pa.Schema = SCHEMA) -> pa.Table:
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    return pj.read_json(pa.BufferReader(b"\n".join(lines)), parse_options=options).combine_chunks()


def _random_document(rng: random.Random) -> dict[str, Any]:
    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.15 else value

    at = datetime(1900, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(0, 300 * 365 * 86_400 * 10**6))
    document: dict[str, Any] = {
        "flag": maybe(rng.random() < 0.5),
        "i8": maybe(rng.randint(-128, 127)),
        "i16": maybe(rng.randint(-(2**15), 2**15 - 1)),
        "i32": maybe(rng.randint(-(2**31), 2**31 - 1)),
        "i64": maybe(rng.choice([-(2**63), 2**63 - 1, 0, rng.randint(-(2**63), 2**63 - 1)])),
        "f32": maybe(rng.choice([0.1, -3.5, 1e-7, 3.4e38, rng.uniform(-1e6, 1e6), 7])),
        "f64": maybe(rng.choice([0.1, -0.0, 1.7976931348623157e308, 5e-324, rng.uniform(-1e12, 1e12), 12])),
        "text": maybe(rng.choice(TEXTS) * rng.randint(1, 3)),
        "amount": maybe(Decimal(rng.randint(-(10**18) + 1, 10**18 - 1)).scaleb(-rng.choice([0, 1, 2]))),
        "tiny": maybe(Decimal(rng.randint(-99_999, 99_999)).scaleb(-5)),
        "at": maybe(_iso(at, rng)),
        "tags": maybe([rng.choice(TEXTS) for _ in range(rng.randint(0, 3))]),
        "items": maybe([{"n": rng.randint(-5, 5), "s": maybe("x")} for _ in range(rng.randint(0, 2))]),
        "image": maybe({"id": rng.randint(0, 10**12), "name": maybe(rng.choice(TEXTS)), "nested": maybe({"n": 1})}),
    }
    for key in list(document):
        if rng.random() < 0.05:
            del document[key]  # an absent key reads as null
    if rng.random() < 0.3:
        document["unknown"] = {"deep": [1, {"x": None}], "s": "ignored \u00e9"}
    return document


def _iso(at: datetime, rng: random.Random) -> str:
    offset = timedelta(minutes=rng.choice([0, 0, 60, -330, 840, -720]))
    local = at.astimezone(timezone(offset))
    digits = rng.choice([0, 1, 3, 6])
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{local.microsecond:06d}"[:digits]
    zone = "Z" if not offset else local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:]
    return text + zone


def _dumps(document: dict[str, Any], rng: random.Random) -> bytes:
    text = json.dumps(
        document, ensure_ascii=rng.random() < 0.5, default=str, separators=rng.choice([(",", ":"), (", ", ": ")])
    )
    for key in ("amount", "tiny"):  # decimals are JSON numbers, as Debezium writes them
        value = document.get(key)
        if value is not None:
            text = text.replace(f'"{key}": "{value}"', f'"{key}": {value}').replace(
                f'"{key}":"{value}"', f'"{key}":{value}'
            )
    return text.encode()


def test_random_documents_read_as_arrow_reads_them() -> None:
    rng = random.Random(20261123)
    lines = [_dumps(_random_document(rng), rng) for _ in range(3_000)]
    read = JsonArrowReader(SCHEMA).read(lines)
    assert (read.rejected, read.stop, read.taken) == (None, 3_000, None)
    table = read.rows
    table.validate(full=True)
    expected = _arrow(lines)
    assert table.num_rows == 3_000
    for name in SCHEMA.names:
        assert table.column(name).equals(expected.column(name)), name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12345678901234567.89", Decimal("12345678901234567.89")),
        ("-0.5", Decimal("-0.50")),
        ("0", Decimal("0.00")),
        ("-99999999999999999999"[:19], Decimal("-999999999999999999")),
    ],
)
def test_decimals_are_exact(text: str, expected: Decimal) -> None:
    read = JsonArrowReader(pa.schema([("d", pa.decimal128(20, 2))])).read([f'{{"d":{text}}}'.encode()])
    assert read.rejected is None
    assert read.rows.column("d").to_pylist() == [expected]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"i64": 1.5}', "integer"),
        (b'{"i8": 128}', "out of range"),
        (b'{"i64": 9223372036854775808}', "out of range"),
        (b'{"i64": -9223372036854775809}', "out of range"),
        (b'{"i64": 123456789012345678901234567890}', "out of range"),
        (b'{"i8": -129}', "out of range"),
        (b'{"i8": -}', "invalid number"),
        (b'{"i8": 1e2}', "integer"),
        (b'{"i64": "1"}', "expected an integer"),
        (b'{"amount": 1.234}', "does not fit"),
        (b'{"amount": 1e3}', "exponent"),
        (b'{"amount": 1234567890123456789.5}', "does not fit"),
        (b'{"text": 5}', "expected a string"),
        (b'{"flag": "true"}', "expected a boolean"),
        (b'{"tags": "a"}', "expected an array"),
        (b'{"image": []}', "expected an object"),
        (b'{"at": "2026-02-30T00:00:00Z"}', "ISO-8601"),
        (b'{"at": "2026-01-01T00:00:00"}', "ISO-8601"),
        (b'{"at": "2026-01-01T00:00:00.1234567Z"}', "ISO-8601"),
        (b'{"text": "\xff"}', "UTF-8"),
        (b'{"text": "twelve bytes\xc3"}', "UTF-8"),  # a sequence cut short by the closing quote
        (b'{"text": "\xc0\x80"}', "UTF-8"),  # an overlong NUL
        (b'{"text": "\xed\xa0\x80"}', "UTF-8"),  # a surrogate spelled in UTF-8
        (b'{"text": "\x80"}', "UTF-8"),  # a continuation byte alone
        (b'{"unknown": "skipped \xff"}', "UTF-8"),
        (b'{"\xe9": 1}', "UTF-8"),
        (b'{"text": "\\ud800"}', "surrogate"),
        (b'{"text": "a\x01b"}', "control character"),
        (b'{"text": "\\x"}', "escape"),
        (b'{"i8": 1, "i8": 2}', "duplicate key"),
        (b'{"i8": 1} {"i8": 2}', "after the object"),
        (b'{"i8": 01}', "invalid number"),
        (b'{"i8": 1,}', "a key"),
        (b'{"i8": 1', "end of the value"),
        (b"null", "not a JSON object"),
        (b'{"unknown": [1, 2}', "expected"),
        (b'{"image": {"id": 1, "extra": 2}}', "unknown key"),
        (b'{"unknown": ' + b"[" * 500 + b"]" * 500 + b"}", "nested deeper"),
    ],
)
def test_a_rejected_value_stops_the_read_and_keeps_the_rows_before(value: bytes, reason: str) -> None:
    reader = JsonArrowReader(SCHEMA, strict=("image",))
    good = b'{"i8": 7, "tags": ["a", "b"], "items": [{"n": 1, "s": "x"}], "image": {"id": 3, "name": "n"}}'
    read = reader.read([good, good, value, good])
    assert read.rejected is not None
    assert reason in read.rejected
    assert (read.stop, read.rows.num_rows) == (2, 2)
    table = read.rows
    table.validate(full=True)
    assert table.column("i8").to_pylist() == [7, 7]
    assert table.column("tags").to_pylist() == [["a", "b"], ["a", "b"]]
    assert table.column("items").to_pylist() == [[{"n": 1, "s": "x"}]] * 2
    rest = reader.read([good, good, value, good], 3)
    assert (rest.rows.num_rows, rest.stop, rest.rejected) == (1, 4, None)


def test_a_value_rejected_halfway_leaves_no_partial_row() -> None:
    """The failing value had already filled some columns and list items before its bad field."""
    reader = JsonArrowReader(SCHEMA)
    bad = b'{"i8": 1, "text": "partial", "tags": ["x", "y", "z"], "items": [{"n": 1}, {"n": "bad"}]}'
    good = b'{"i8": 2, "text": "kept", "tags": ["k"], "items": [{"n": 2}]}'
    first = reader.read([good, bad])
    assert first.rejected is not None
    assert first.rows.to_pylist() == _arrow([good]).to_pylist()
    rest = reader.read([good, bad, good], 2)
    assert rest.rejected is None
    assert rest.rows.to_pylist() == _arrow([good]).to_pylist()


def test_unknown_keys_are_checked_and_skipped_unless_strict() -> None:
    value = b'{"i8": 1, "later": {"a": [true, false, null, -1.5e-3, "s\\u00e9"]}, "image": {"id": 1, "more": 0}}'
    read = JsonArrowReader(SCHEMA).read([value])
    assert read.rejected is None
    assert read.rows.column("image").to_pylist() == [{"id": 1, "name": None, "nested": None}]
    strict = JsonArrowReader(SCHEMA, strict=("image",)).read([value])
    assert strict.rejected is not None
    assert "more" in strict.rejected


def _variable_scale(value: Decimal) -> bytes:
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    unscaled = int("".join(map(str, digits))) * (-1 if sign else 1)
    raw = unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)
    return json.dumps({"d": {"scale": -exponent, "value": base64.b64encode(raw).decode()}}).encode()


def test_decimal256_numbers_and_variable_scale_decimals_are_exact() -> None:
    wide = pa.schema([("d", pa.decimal256(76, 38))])
    huge = Decimal("-" + "9" * 38 + "." + "1" * 38)
    read = JsonArrowReader(wide).read([f'{{"d":{huge}}}'.encode(), b'{"d":0.5}'])
    assert read.rejected is None
    assert read.rows.column("d").to_pylist() == [huge, Decimal("0.5")]

    variable = pa.schema([pa.field("d", pa.decimal256(76, 38), metadata=VARIABLE_SCALE)])
    values = [Decimal("0.000123456789"), Decimal("-1"), Decimal("-128"), Decimal("255"), Decimal("1E+30"), huge]
    read = JsonArrowReader(variable).read([_variable_scale(v) for v in values] + [b'{"d": null}'])
    assert read.rejected is None
    assert read.rows.column("d").to_pylist() == [*values, None]

    narrow = pa.schema([pa.field("d", pa.decimal128(10, 2), metadata=VARIABLE_SCALE)])
    assert JsonArrowReader(narrow).read([_variable_scale(Decimal("12.5"))]).rows.column("d").to_pylist() == [
        Decimal("12.50")
    ]
    for bad in [
        _variable_scale(Decimal("1.005")),  # three places: would round
        _variable_scale(Decimal("123456789")),  # over the precision
        b'{"d": {"scale": 1, "value": "not base64!"}}',
        b'{"d": {"scale": 1}}',
        b'{"d": {"scale": 1, "value": "AQ==", "extra": 1}}',
        b'{"d": 1.5}',
    ]:
        rejected = JsonArrowReader(narrow).read([bad]).rejected
        assert rejected is not None, bad


def test_timestamps_with_offsets_are_utc_instants() -> None:
    schema = pa.schema([("at", pa.timestamp("us", tz="UTC"))])
    values = [
        b'{"at": "2024-02-29T23:59:59.999999Z"}',
        b'{"at": "1969-12-31T23:59:59.5Z"}',
        b'{"at": "2026-11-23T08:00:00+05:30"}',
        b'{"at": "0001-01-01T00:00:00Z"}',
        b'{"at": "9999-12-31T23:59:59-12:00"}',
    ]
    read = JsonArrowReader(schema).read(values)
    assert read.rejected is None
    table = read.rows
    assert table.column("at").equals(_arrow(values, schema).column("at"))
    assert table.column("at")[2].as_py() == datetime(2026, 11, 23, 2, 30, tzinfo=UTC)


def test_types_the_reader_does_not_build_are_refused_up_front() -> None:
    with pytest.raises(UnsupportedSchemaError):
        JsonArrowReader(pa.schema([("n", pa.uint64())]))
    deep: pa.DataType = pa.int8()
    for _ in range(100):  # the builders recurse over the field tree: its depth is bounded
        deep = pa.struct([("x", deep)])
    with pytest.raises(UnsupportedSchemaError, match="nested deeper"):
        JsonArrowReader(pa.schema([("deep", deep)]))
    with pytest.raises(UnsupportedSchemaError):
        JsonArrowReader(pa.schema([("t", pa.timestamp("us"))]))  # no zone: a string would be ambiguous


def test_an_empty_batch_reads_as_an_empty_table() -> None:
    read = JsonArrowReader(SCHEMA).read([])
    assert (read.rows.num_rows, read.stop, read.rejected) == (0, 0, None)
    assert read.rows.schema.equals(SCHEMA)


def test_none_values_are_skipped_and_the_rows_mapped_to_their_values() -> None:
    reader = JsonArrowReader(SCHEMA)
    read = reader.read([None, b'{"i8": 1}', None, None, b'{"i8": 2}', b'{"i8": 300}', b'{"i8": 3}'])
    assert (read.stop, read.rows.column("i8").to_pylist()) == (5, [1, 2])
    assert read.taken is not None
    assert read.taken.tolist() == [1, 4]


def test_a_value_over_the_size_limit_is_rejected_unread() -> None:
    read = JsonArrowReader(SCHEMA).read([b'{"i8": 1}', b'{"text": "' + b"x" * 100 + b'"}'], max_bytes=50)
    assert read.stop == 1
    assert read.rejected is not None
    assert "exceeds the 50-byte limit" in read.rejected


def test_an_envelope_with_a_schema_first_is_unwrapped() -> None:
    reader = JsonArrowReader(SCHEMA, envelope="payload")
    values = [
        b'{"schema": {"type": "struct", "fields": [{"field": "payload"}]}, "payload": {"i8": 1, "text": "w"}}',
        b'{"i8": 2}',  # not wrapped: read as it is
        b'{"payload": {"i8": 3}}',  # no schema first: an ordinary object whose key "payload" is unknown
        b'{"schema": {}, "payload": {"i8": 4}, "extra": [1]}',
    ]
    read = reader.read(values)
    assert read.rejected is None
    assert read.rows.column("i8").to_pylist() == [1, 2, None, 4]
    assert read.rows.column("text").to_pylist() == ["w", None, None, None]
    for bad, reason in [
        (b'{"schema": {}}', "has no"),
        (b'{"schema": {}, "payload": null}', "not one object"),
        (b'{"schema": {}, "payload": {"i8": 1}, "payload": {"i8": 2}}', "not one object"),
    ]:
        rejected = reader.read([bad]).rejected
        assert rejected is not None
        assert reason in rejected


def test_keys_are_matched_exactly_whatever_the_previous_objects_looked_like() -> None:
    """Each object's key order is remembered; a key that only starts like the remembered one, an escaped
    spelling of it, or a new order must still find its own field."""
    values = [
        b'{"i8": 1, "i16": 2}',
        b'{"i8x": 9, "i16": 3}',
        b'{"i\\u0038": 4, "i16": 5}',
        b'{"i16": 6, "i8": 7}',
        b'{"i8": 8, "i16": 9}',
        b'{"i8" :10, "i16" : 11}',
        b'{"i8":12, "i16":13}',
    ]
    read = JsonArrowReader(SCHEMA).read(values)
    assert read.rejected is None
    assert read.rows.column("i8").to_pylist() == [1, None, 4, 7, 8, 10, 12]
    assert read.rows.column("i16").to_pylist() == [2, 3, 5, 6, 9, 11, 13]
    assert read.rows.column("i8").equals(_arrow(values).column("i8"))


def test_text_reads_exactly_with_a_special_character_at_every_position() -> None:
    """Strings are scanned eight bytes at a time: a quote, backslash, escape or multibyte character must be
    found wherever it falls in a word, and every byte around it kept."""
    specials = ['"', "\\", "\n", "é", "日", "🚀", "\u0001"]
    texts = [
        "x" * before + special + "y" * after
        for special in specials
        for before in range(18)
        for after in (0, 1, 7, 8, 9)
    ]
    values = [json.dumps({"text": text}, ensure_ascii=False).encode() for text in texts]
    read = JsonArrowReader(SCHEMA).read(values)
    assert read.rejected is None
    assert read.rows.column("text").to_pylist() == texts


def test_reads_a_slice_of_a_value_column_with_nulls_in_place() -> None:
    """The decoder hands over slices of the batch's value column: offsets into shared buffers."""
    values = [b'{"i8": 1}', None, b'{"i8": 2}', b'{"i8": 3}', None, b'{"i8": 4}']
    column = pa.array(values, type=pa.large_binary())
    read = JsonArrowReader(SCHEMA).read(column.slice(1, 4))
    assert (read.stop, read.rejected) == (4, None)
    assert read.rows.column("i8").to_pylist() == [2, 3]
    assert read.taken is not None
    assert read.taken.tolist() == [1, 2]
    assert JsonArrowReader(SCHEMA).read(column.slice(3, 0)).rows.num_rows == 0


def test_value_buffers_that_do_not_hold_their_values_are_refused() -> None:
    """The native reader checks the buffers it is handed instead of trusting them."""
    reader = Reader(("struct", [("i8", ("int", 8))], False))
    data = memoryview(b'{"i8": 1}{"i8": 2}')
    for offsets in ([0, 9, 3], [0, 9, 99], [0, 9]):
        view = memoryview(np.array(offsets, dtype="<i8").tobytes())
        with pytest.raises(ValueError, match="do not hold its values"):
            reader.read((None, view, data, 0, 2), 0, 1 << 20)
    short_validity = memoryview(b"")
    with pytest.raises(ValueError, match="do not hold its values"):
        reader.read((short_validity, memoryview(np.array([0, 9, 18], dtype="<i8").tobytes()), data, 0, 2), 0, 1 << 20)


def test_runs_of_null_structs_around_rejected_values_read_as_arrow_reads_the_good_ones() -> None:
    """Null structs are filled in bulk later; a value rejected after some of them, or halfway through a
    struct, must leave every column the same length and in step."""
    good = [
        b'{"i8": 1, "image": null}',
        b'{"i8": 2}',
        b'{"i8": 3, "image": {"id": 1, "name": "a", "nested": null}, "items": [null, {"n": 1}]}',
        b'{"i8": 4, "image": null, "items": [null]}',
        b'{"i8": 6, "image": null}',
        b'{"i8": 8, "image": {"id": 3, "nested": {"n": 2, "s": "x"}}}',
        b'{"i8": 9, "image": null, "items": [{"n": 3}, null]}',
    ]
    rejected = {
        4: b'{"i8": 5, "image": {"id": 2, "nested": {"n": 1, "s": 7}}}',  # halfway through a nested struct
        6: b'{"i8": 7, "image": null, "items": [null, {"n": "x"}]}',  # after a null struct, in a list
    }
    values = list(good)
    for index in sorted(rejected):
        values.insert(index, rejected[index])
    reader = JsonArrowReader(SCHEMA)
    parts, start, refused = [], 0, []
    while start < len(values):
        read = reader.read(values, start)
        read.rows.validate(full=True)
        parts.append(read.rows)
        if read.rejected is None:
            break
        refused.append(read.stop)
        start = read.stop + 1
    assert refused == sorted(rejected)
    assert pa.concat_tables(parts).to_pylist() == _arrow(good).to_pylist()


@pytest.mark.parametrize(
    "value",
    [
        b'{"image": {"a\\"b": 1}}',  # a column named a"b: an unknown key with an escape, first in its object
        b'{"image": {"id": 1, "x\\u0041": 2}}',  # after a known key: one past the keys remembered
        b'{"image": {"id": 1, "name": "n", "nested": null, "\\u00e9": 3}}',
    ],
)
def test_an_unknown_escaped_key_in_a_strict_struct_is_rejected_by_its_name(value: bytes) -> None:
    """A valid event with a key the schema does not name, spelled with an escape, is a rejection, not a crash."""
    reader = JsonArrowReader(SCHEMA, strict=("image",))
    read = reader.read([b'{"image": {"id": 1}}', value])
    assert (read.stop, read.rows.num_rows) == (1, 1)
    (unknown,) = json.loads(value)["image"].keys() - {"id", "name", "nested"}
    assert read.rejected == "unknown key " + json.dumps(unknown, ensure_ascii=False)


@pytest.mark.parametrize(
    "value",
    [
        b'{"later": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        b'{"image": {"nested": ' + b'{"n": ' * 20_000 + b"1" + b"}" * 20_000 + b"}}",
        b'{"i64": ' + b"9" * 5_000 + b"}",
        b'{"f64": 1e999999}',
        b'{"amount": 0.' + b"1" * 5_000 + b"}",
        b'{"text": "\\ud800"}',
        b'{"text": "\\udc00\\ud800"}',
        b'{"\\ud800": 1}',
        b'{"text": "\xed\xa0\x80"}',
        b'{"i8": 1, "i8": 2}',
        b'{"at": "99999-01-01T00:00:00Z"}',
        b'{"image": {"id": 1, "a\\"b": 2}}',
    ],
)
def test_hostile_values_are_rejected_and_reading_goes_on(value: bytes) -> None:
    reader = JsonArrowReader(SCHEMA, strict=("image",))
    good = b'{"i8": 1, "image": {"id": 1, "name": "n"}}'
    read = reader.read([good, value, good])
    assert (read.stop, read.rows.num_rows) == (1, 1)
    assert read.rejected is not None
    assert reader.read([good, value, good], 2).rows.num_rows == 1


def test_a_failure_inside_the_native_reader_reads_as_the_value_at_start_rejected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in the native reader must cost the fast path, never the process: the caller hands the value at
    ``start`` to Arrow's reader, as it does every rejected value, and goes on after it."""

    class FailingReader:
        def read(self, *_args: object) -> None:
            raise ReaderError("index out of bounds")

    assert issubclass(ReaderError, Exception)
    reader = JsonArrowReader(SCHEMA)
    monkeypatch.setattr(reader, "_reader", FailingReader())
    read = reader.read([b'{"i8": 1}', b'{"i8": 2}'], 1)
    assert (read.stop, read.rows.num_rows, read.taken) == (1, 0, None)
    assert read.rejected == "the native reader failed: index out of bounds"
    assert read.rows.schema.equals(SCHEMA)
