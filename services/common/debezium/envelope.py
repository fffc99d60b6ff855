"""The Debezium envelope → the lake schema, for any wire format.

A decoder (JSON, Avro) turns a batch of values into one Arrow table of the *wire* schema
(:attr:`EnvelopeConverter.wire_schema`: ``before``/``after`` structs, ``source``, ``op``); the converter
validates it (ops, images, keys, unknown columns), turns Debezium's semantic encodings into the lake
types, replaces the TOAST placeholder with NULL (listing the column in ``_unavailable_columns``) and adds
the Kafka and source metadata — vectorised, with per-row failures instead of exceptions.

Its length (past the ~400 lines of most modules): the checks and conversions run over the same columns in
one pass and share their per-row failure bookkeeping.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Context, Decimal, localcontext
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.common.contracts.arrow import arrow_type, lake_schema
from services.common.contracts.model import Column, TableContract
from services.common.debezium.records import DecodeFailure, Reason
from services.common.debezium.values import (
    BULK_UNSCALED_DIGITS,
    UNAVAILABLE_VALUE,
    OutOfRangeError,
    base64_decoded,
    base64_unscaled,
    column_bytes,
    fit_unscaled,
)
from services.common.kafka.message_columns import RecordOrigins

__all__ = ["EnvelopeConverter", "Origin", "untouched_toast_arrives_null", "wire_type"]


class _Check(NamedTuple):
    """Rows failing one validation: a boolean mask, why, and the column it is about (none for the envelope's
    checks). A check of values says what each failing row holds (``each``, by row), so a record's DLQ detail
    names its own value."""

    mask: np.ndarray
    reason: str
    detail: str
    column: str | None = None
    each: Mapping[int, str] | None = None

    def detail_of(self, row: int) -> str:
        return self.detail if self.each is None else self.each.get(row, self.detail)


_OPS = pa.array(["c", "u", "d", "r", "t"])
_KNOWN_OP = np.zeros(256, dtype=bool)  # by the op's one byte: c, u, d, r, t
_KNOWN_OP[np.frombuffer(b"cudrt", dtype=np.uint8)] = True
_UNAVAILABLE_BASE64 = base64.b64encode(UNAVAILABLE_VALUE.encode()).decode()
_UNAVAILABLE_HSTORE = json.dumps({UNAVAILABLE_VALUE: UNAVAILABLE_VALUE}, separators=(",", ":"))
# The placeholder as each string-typed wire column carries it: bytes base64-encoded, an hstore (a json column)
# as a map of the placeholder to itself.
_PLACEHOLDER = {
    "string": (UNAVAILABLE_VALUE,),
    "json": (UNAVAILABLE_VALUE, _UNAVAILABLE_HSTORE),
    "bytes": (_UNAVAILABLE_BASE64,),
}
# Whether a string column's bytes hold a placeholder anywhere (every form of a type holds its first): one scan
# that spares nearly every batch the value-by-value comparison (the column's buffer is searched in place).
_FIND_PLACEHOLDER = {forms[0]: re.compile(re.escape(forms[0].encode())).search for forms in _PLACEHOLDER.values()}
_SNAPSHOT_FALSE = pa.array(["false"])
# Event times (``source.ts_ms``/``ts_us``, the Kafka timestamp) choose the lake folder and land in bronze:
# they must be a UTC instant of years 1-9999, what Python, Parquet readers and BigQuery all hold.
_FIRST_EVENT_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
_LAST_EVENT_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
_FIRST_EVENT_MS, _LAST_EVENT_MS = -(-_FIRST_EVENT_US // 1000), _LAST_EVENT_US // 1000
_EVENT_YEARS = "is outside years 1-9999"
# Dates and timestamps in columns hold years 1-9999 too: PostgreSQL's ``infinity`` and ``-infinity`` arrive as
# sentinels far outside them (a timestamp(3) one used to wrap to 1969 when made microseconds), and neither
# Python nor BigQuery holds a year beyond 9999 or before 1.
_FIRST_DAY, _LAST_DAY = -719_162, 2_932_896  # 0001-01-01 and 9999-12-31 in days since the epoch
_COLUMN_YEARS = "is outside years 1-9999 (PostgreSQL's infinity arrives so)"
# ... but a timestamptz's infinity and -infinity arrive as these words where an ISO-8601 instant belongs, and in an
# array as instants of a signed year (-infinity as +292269055-12-02T23:00:00Z): no reader takes them, and a record
# holding one is refused as out of range like the others (:meth:`EnvelopeConverter.outside_years`)
_INFINITIES = frozenset({"infinity", "-infinity"})
_SIGNED_YEAR = re.compile(r"[+-]\d{4,}-|0000-")
# PostgreSQL's time runs from 00:00:00 to 24:00:00 inclusive; Arrow's, Parquet readers' and BigQuery's end before
# 24:00:00 (a lake file holding it fails the loader's validation, with every other row of the file)
_DAY_US = 86_400_000_000
_GREGORIAN_START_US = -12_219_292_800_000_000  # 1582-10-15T00:00:00Z, where java.util's calendar turns Gregorian
_LEAF_UNITS = frozenset({"date", "timestamp", "timestamp_millis", "time", "timestamptz"})
# The source fields the lake keeps; the others (connector, db, schema, table, …) are skipped unread.
SOURCE = pa.struct(
    [
        ("ts_ms", pa.int64()),
        ("ts_us", pa.int64()),
        ("lsn", pa.int64()),
        ("txId", pa.int64()),
        ("snapshot", pa.string()),
    ]
)


def _outside_years(zoned: str) -> bool:
    return zoned in _INFINITIES or _SIGNED_YEAR.match(zoned) is not None


def wire_type(column: Column) -> pa.DataType:
    """A column in the wire schema: Debezium's JSON forms (dates as days, bytes as base64, {scale, value})."""
    match column.semantic:
        case "variable_decimal":
            return pa.struct([("scale", pa.int32()), ("value", pa.string())])
        case "date":
            return pa.int32()
        case "timestamp" | "timestamp_millis" | "time":
            return pa.int64()
        case "bytes":
            return pa.string()
        case "array":
            assert column.items is not None
            return pa.list_(wire_type(column.items))
        case _:
            return arrow_type(column)


@dataclass(frozen=True, slots=True)
class Origin:
    """The topic a batch came from and when it was taken in: the same for every row of the batch."""

    topic: str
    ingested_at_us: int


class EnvelopeConverter:
    """Validates and converts wire-schema tables of one table's change events into lake rows."""

    def __init__(self, contract: TableContract) -> None:
        self.contract = contract
        self.schema = lake_schema(contract)
        self._columns = {c.name: c for c in contract.columns}
        # the columns whose early timestamps Debezium sends in the Julian calendar (:func:`_as_gregorian`): a
        # timestamp array's in every event, any other timestamp's in a snapshot's reads
        self._julian_always = frozenset(f.name for f in self.schema if _julian_elements(f.type))
        self._julian_in_reads = frozenset(f.name for f in self.schema if pa.types.is_timestamp(f.type))
        self._zoned = tuple(c.name for c in contract.columns if (c.items or c).semantic == "timestamptz")
        image = pa.struct([pa.field(c.name, wire_type(c)) for c in contract.columns])
        self.wire_schema = pa.schema(
            [("before", image), ("after", image), ("source", SOURCE), ("op", pa.string()), ("ts_ms", pa.int64())]
        )

    def _gregorian(self, name: str, values: pa.Array, reads: np.ndarray | None) -> pa.Array:
        """Column ``name``'s ``values`` with what Debezium sent in the Julian calendar moved back (``reads``: the
        rows that are a snapshot's reads, None when none is)."""
        if name in self._julian_always:
            return _as_gregorian(values, np.ones(len(values), dtype=bool))
        if reads is not None and name in self._julian_in_reads:
            return _as_gregorian(values, reads)
        return values

    def outside_years(self, event: Mapping[str, Any]) -> tuple[str, str] | None:
        """The column, and why, that puts a decoded event (a JSON object or an Avro record) no reader took out
        of range: a timestamptz column, or an element of an array of them, holding PostgreSQL's infinity or an
        instant outside years 1-9999; None when none does."""
        for side in ("after", "before"):
            image = event.get(side)
            if not isinstance(image, Mapping):
                continue
            for name in self._zoned:
                value = image.get(name)
                values = value if isinstance(value, list) else [value]
                if found := next((v for v in values if isinstance(v, str) and _outside_years(v)), None):
                    return name, f"column {name}: {found!r} {_COLUMN_YEARS}"
        return None

    def to_lake(
        self, wire: pa.Table, records: RecordOrigins, origin: Origin, failures: list[DecodeFailure]
    ) -> pa.Table:
        """Lake rows of ``wire`` (one row per record of ``records``); invalid rows are left out and added to
        ``failures``."""
        n = wire.num_rows
        op = _column(wire, "op")
        source = _column(wire, "source")
        before, after = _column(wire, "before"), _column(wire, "after")
        ops = _ops(op)
        has_reads = bool(ops.read.any())
        has_deletes = bool(ops.delete.any())
        is_delete = pa.array(ops.delete) if has_deletes else None
        before_fields, after_fields = _Fields(before), _Fields(after)

        def image(name: str) -> pa.Array:
            """The row image's column: the before image for deletes, else the after image (the two images may
            differ in their unknown columns, so the choice is made column by column)."""
            if is_delete is None:  # most batches: no per-row choice to make
                return after_fields[name]
            return pc.if_else(is_delete, before_fields[name], after_fields[name])

        has_image = np.where(ops.delete, _valid(before), _valid(after))
        reasons: list[_Check] = [
            _Check(ops.unknown, Reason.UNKNOWN_OP, "op is not c/u/d/r/t"),
            _Check(~_valid(source), Reason.MISSING_SOURCE, "the event has no source block"),
            _Check(~ops.truncate & ~has_image, Reason.MISSING_IMAGE, "no row image for the op"),
        ]
        for key in self.contract.primary_key:
            missing = ~ops.truncate & ~_valid(image(key))
            reasons.append(_Check(missing, Reason.MISSING_KEY, f"primary key column {key} is null"))
        reasons += self._unknown_columns(before, after)
        source_us = _source_micros(source, reasons)
        kafka_us = _kafka_micros(records.timestamps_ms, reasons)

        columns: dict[str, pa.Array] = {}
        unavailable: list[tuple[str, np.ndarray]] = []
        key_only_deletes = self.contract.replica_identity != "full" and has_deletes
        # A delete's after image is null, so its after fields already read null: no per-row choice to make
        # unless some delete carries an after image anyway.
        deletes_carry_after = key_only_deletes and bool((ops.delete & _valid(after)).any())
        for column in self.contract.columns:
            if key_only_deletes and column.name not in self.contract.primary_key:
                # a key-only delete's other columns are Debezium's filler, not data: null
                raw = after_fields[column.name]
                if deletes_carry_after:
                    raw = pc.if_else(is_delete, pa.scalar(None, raw.type), raw)
            else:
                raw = image(column.name)
            converted, bad = _convert(column, raw)
            reasons += [check._replace(column=column.name) for check in bad]
            converted = self._gregorian(column.name, converted, ops.read if has_reads else None)
            if (placeholder := _placeholder_mask(column, raw)) is not None:
                converted = pc.if_else(placeholder, pa.scalar(None, converted.type), converted)
                unavailable.append((column.name, np.asarray(placeholder)))
            columns[column.name] = converted

        bad_rows = np.zeros(n, dtype=bool)
        for check in reasons:
            hits = check.mask & ~bad_rows
            for index in np.flatnonzero(hits):
                message = records.message(int(index))
                failures.append(DecodeFailure(message, check.reason, check.detail_of(int(index)), column=check.column))
            bad_rows |= hits
        keep = pa.array(~bad_rows)

        snapshot = pc.struct_field(source, "snapshot")
        utc = pa.timestamp("us", tz="UTC")
        metadata = {
            "_op": op,
            "_source_ts": pc.cast(source_us, utc),
            "_source_lsn": pc.struct_field(source, "lsn"),
            "_source_txid": pc.struct_field(source, "txId"),
            "_is_snapshot": pc.fill_null(pc.invert(pc.is_in(snapshot, value_set=_SNAPSHOT_FALSE)), False),
            "_unavailable_columns": _unavailable_lists(n, unavailable),
            # constants repeated in C: a string per row through Python objects cost ~300 ns a row
            "_kafka_topic": pa.repeat(pa.scalar(origin.topic, pa.string()), n),
            "_kafka_partition": pa.array(records.partitions),
            "_kafka_offset": pa.array(records.offsets),
            "_kafka_timestamp": pc.cast(pa.array(kafka_us), utc),
            "_ingested_at": pa.repeat(pa.scalar(origin.ingested_at_us, utc), n),
        }
        arrays = [columns[f.name] if f.name in columns else metadata[f.name] for f in self.schema]
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        return table.filter(keep) if bad_rows.any() else table

    def _unknown_columns(self, before: pa.Array, after: pa.Array) -> list[_Check]:
        found = []
        for image in (before, after):
            for index in range(image.type.num_fields):
                try:
                    name = image.type.field(index).name
                except UnicodeDecodeError:  # a reader kept a key whose bytes are not UTF-8
                    found.append(
                        _Check(_present(image, index), Reason.INVALID_UTF8, "a column name is not valid UTF-8")
                    )
                    continue
                if name not in self._columns:
                    detail = (
                        f"column {name!r} is not in contract v{self.contract.version} of {self.contract.qualified_name}"
                    )
                    found.append(_Check(_present(image, index), Reason.SCHEMA_MISMATCH, detail, name))
        return found


def _present(image: pa.Array, index: int) -> np.ndarray:
    """The rows whose image holds field ``index`` (only an unknown field's are needed: the contract's are
    not checked here)."""
    return np.asarray(pc.is_valid(pc.struct_field(image, index)))


def _convert(column: Column, raw: pa.Array) -> tuple[pa.Array, list[_Check]]:
    """A wire column in its lake type, and the rows whose value that type cannot hold."""
    target = arrow_type(column)
    match column.semantic:
        case semantic if semantic in _LEAF_UNITS:
            return _convert_unit(column, raw, target)
        case "variable_decimal" if pa.types.is_struct(raw.type):  # a reader may have converted it already
            return _variable_decimals(raw, target, column.name)
        case "bytes":
            return _base64_column(raw, target, column.name)
        case "array":
            return _convert_list(column, raw, target)
        case _:
            return raw, []


def _convert_unit(
    column: Column, raw: pa.Array, target: pa.DataType, name: str | None = None
) -> tuple[pa.Array, list[_Check]]:
    """Days, microseconds or milliseconds in their lake type; a value the unit change would overflow, a date or
    instant outside years 1-9999, or a time outside a day, is refused instead of wrapped. ``name``: the column's,
    when ``column`` is an array's element."""
    what = f"column {name or column.name}"
    match column.semantic:
        case "timestamp_millis":
            kept, checks = _within(raw, _FIRST_EVENT_MS, _LAST_EVENT_MS, what, _COLUMN_YEARS)
            return pc.cast(pc.multiply_checked(kept, 1000), target), checks
        case "time":
            kept, checks = _within(raw, 0, _DAY_US - 1, what, "µs is not a time of day before 24:00:00")
            return pc.cast(kept, target), checks
        case "timestamp":
            kept, checks = _within(raw, _FIRST_EVENT_US, _LAST_EVENT_US, what, _COLUMN_YEARS)
            return pc.cast(kept, target), checks
        case "timestamptz":  # read as an instant already (year 0 among them): only its years are checked
            kept, checks = _within(raw.view(pa.int64()), _FIRST_EVENT_US, _LAST_EVENT_US, what, _COLUMN_YEARS)
            return pc.cast(kept, target), checks
        case _:  # days → date32
            kept, checks = _within(raw, _FIRST_DAY, _LAST_DAY, what, _COLUMN_YEARS)
            return pc.cast(kept, target), checks


def _julian_elements(kind: pa.DataType) -> bool:
    """Whether ``kind`` is a list of timestamps without a time zone: PostgreSQL's JDBC driver reads such an array's
    elements into ``java.sql.Timestamp`` for snapshots and streamed changes alike (a ``timestamptz[]``'s arrive as
    their text)."""
    return bool(pa.types.is_list(kind) and pa.types.is_timestamp(kind.value_type) and kind.value_type.tz is None)


def _as_gregorian(values: pa.Array, rows: np.ndarray) -> pa.Array:
    """``values`` with the timestamps of ``rows`` before 1582-10-15 moved to the dates PostgreSQL holds.

    Debezium reads a snapshot's timestamps, and a timestamp array's elements whenever it reads one, through
    ``java.sql.Timestamp``, whose calendar is Julian before 1582-10-15: it sends the instant of the Julian date
    with PostgreSQL's fields, days off the (proleptic Gregorian) value PostgreSQL holds. Other streamed values are
    read from the WAL's text and are exact. A batch with no such value comes back as it is.
    """
    kind = values.type
    if pa.types.is_list(kind) and pa.types.is_timestamp(kind.value_type):
        assert isinstance(values, pa.ListArray)
        flat = values.flatten()
        elements = _as_gregorian(flat, rows[np.asarray(pc.list_parent_indices(values))])
        if elements is flat:  # nothing moved: the lists as they are
            return values
        return pa.ListArray.from_arrays(
            pc.subtract(values.offsets, values.offsets[0]), elements, type=kind, mask=pc.is_null(values)
        )
    if not pa.types.is_timestamp(kind):
        return values
    as_micros = values.cast(pa.int64())
    smallest = pc.min(as_micros).as_py()
    if smallest is None or smallest >= _GREGORIAN_START_US:  # nearly always: one pass, nothing to do
        return values
    micros, valid = np.asarray(pc.fill_null(as_micros, 0)), _valid(values)
    early = rows & valid & (micros < _GREGORIAN_START_US)
    fixed = np.where(early, _julian_as_gregorian(micros), micros)
    return pa.array(fixed, pa.int64(), mask=~valid).cast(kind)


def _julian_as_gregorian(micros: np.ndarray) -> np.ndarray:
    """The proleptic Gregorian time with the fields of the Julian date at each instant (microseconds since the
    epoch): the day's Julian calendar fields from its Julian day number, then their Gregorian day count."""
    days, time_of_day = np.divmod(micros, _DAY_US)
    c = days + 2_440_588 + 32_082  # the Julian day number, shifted so that every quotient below is positive
    d = (4 * c + 3) // 1461
    e = c - (1461 * d) // 4
    m = (5 * e + 2) // 153
    day = e - (153 * m + 2) // 5 + 1
    month = m + 3 - 12 * (m // 10)
    year = d - 4800 + m // 10
    # days since 1970-01-01 of a proleptic Gregorian date (years from March, eras of 400 years)
    year = year - (month <= 2)
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    gregorian: np.ndarray = (era * 146_097 + day_of_era - 719_468) * _DAY_US + time_of_day
    return gregorian


def _within(raw: pa.Array, low: int, high: int, what: str, why: str) -> tuple[pa.Array, list[_Check]]:
    """``raw`` with the values outside ``[low, high]`` nulled, and a check for their rows."""
    bounds = pc.min_max(raw)
    smallest, largest = bounds["min"].as_py(), bounds["max"].as_py()
    if smallest is None or (low <= smallest and largest <= high):  # nearly always: one pass, nothing to do
        return raw, []
    outside = pc.fill_null(pc.or_(pc.less(raw, low), pc.greater(raw, high)), False)
    values = raw.filter(outside).to_pylist()
    each = {int(row): f"{what}: {value} {why}" for row, value in zip(np.flatnonzero(outside), values, strict=True)}
    kept = pc.if_else(outside, pa.scalar(None, raw.type), raw)
    return kept, [_Check(np.asarray(outside), Reason.OUT_OF_RANGE, next(iter(each.values())), each=each)]


def _source_micros(source: pa.Array, reasons: list[_Check]) -> pa.Array:
    """``source.ts_us``, else ``source.ts_ms`` in microseconds; a time outside years 1-9999 fails its row."""
    ts_us, checks_us = _within(
        pc.struct_field(source, "ts_us"), _FIRST_EVENT_US, _LAST_EVENT_US, "source.ts_us", _EVENT_YEARS
    )
    ts_ms, checks_ms = _within(
        pc.struct_field(source, "ts_ms"), _FIRST_EVENT_MS, _LAST_EVENT_MS, "source.ts_ms", _EVENT_YEARS
    )
    reasons += checks_us + checks_ms
    if ts_us.null_count == 0:  # Debezium sends ts_us: nothing to fill in from ts_ms
        return ts_us
    return pc.coalesce(ts_us, pc.multiply_checked(ts_ms, 1000))


def _kafka_micros(timestamps_ms: np.ndarray, reasons: list[_Check]) -> np.ndarray:
    """The Kafka timestamps in microseconds (0 when a record has none); one beyond year 9999 fails its row."""
    late = timestamps_ms > _LAST_EVENT_MS
    if late.any():
        first = int(timestamps_ms[late][0])
        reasons.append(_Check(late, Reason.OUT_OF_RANGE, f"the Kafka timestamp {first} ms {_EVENT_YEARS}"))
    usable = (timestamps_ms >= 0) & ~late
    return np.where(usable, timestamps_ms, 0) * 1000


class _Fields:
    """The fields of a row image by name, null where the image is: all of them split off in one call, on the
    first ask."""

    def __init__(self, image: pa.StructArray) -> None:
        self._image = image
        self._fields: list[pa.Array] | None = None

    def __getitem__(self, name: str) -> pa.Array:
        index = self._image.type.get_field_index(name)
        if index < 0:  # missing or not unique: the compute function says which
            return pc.struct_field(self._image, name)
        if self._fields is None:
            self._fields = self._image.flatten()
        return self._fields[index]


class _Ops(NamedTuple):
    """Per row of a batch: the op is a delete, a truncate, a snapshot's read, none Debezium sends."""

    delete: np.ndarray
    truncate: np.ndarray
    read: np.ndarray
    unknown: np.ndarray


def _ops(op: pa.Array) -> _Ops:
    """The ops of a batch, read from the string column's bytes (every known op is one character), not with
    a compute call per question."""
    if op.type != pa.string():  # a column no reader should give: the general way
        delete = np.asarray(pc.fill_null(pc.equal(op, "d"), False))
        truncate = np.asarray(pc.fill_null(pc.equal(op, "t"), False))
        read = np.asarray(pc.fill_null(pc.equal(op, "r"), False))
        return _Ops(delete, truncate, read, ~np.asarray(pc.fill_null(pc.is_in(op, value_set=_OPS), False)))
    data, offsets = column_bytes(op)
    one_char = _valid(op) & (np.diff(offsets) == 1)
    first = np.zeros(len(op), dtype=np.uint8)
    first[one_char] = data[offsets[:-1][one_char]]
    return _Ops(first == ord("d"), first == ord("t"), first == ord("r"), ~_KNOWN_OP[first])


def _valid(array: pa.Array) -> np.ndarray:
    """Which rows of ``array`` are not null, from its validity bitmap."""
    n = len(array)
    if array.null_count == 0:
        return np.ones(n, dtype=bool)
    bitmap = array.buffers()[0]
    if bitmap is None:  # a null-typed array: no bitmap, every row null
        return np.zeros(n, dtype=bool)
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
    return bits[array.offset : array.offset + n].astype(bool)


def _holds(strings: pa.Array, scan: Callable[[memoryview], object]) -> bool:
    """Whether ``scan`` finds its bytes in the character data of a string array (a superset of its values)."""
    data = strings.buffers()[2]
    return data is not None and scan(memoryview(data)) is not None


def _column(table: pa.Table, name: str) -> pa.Array:
    chunked = table.column(name)
    return chunked.chunk(0) if chunked.num_chunks == 1 else pa.concat_arrays(chunked.chunks)


def _placeholder_mask(column: Column, raw: pa.Array) -> pa.Array | None:
    """Where Debezium sent the unavailable-value placeholder for an untouched TOASTed column."""
    if (forms := _PLACEHOLDER.get(column.semantic)) is not None:
        if raw.type == pa.string() and not _holds(raw, _FIND_PLACEHOLDER[forms[0]]):
            return None
        mask = pc.fill_null(pc.is_in(raw, value_set=pa.array(forms, raw.type)), False)
    elif column.semantic == "array" and column.items is not None and column.items.pg_type in _ARRAY_PLACEHOLDER:
        mask = _equal_lists(raw, _ARRAY_PLACEHOLDER[column.items.pg_type])
    else:
        return None
    return mask if pc.any(mask).as_py() else None


def _equal_lists(raw: pa.Array, elements: pa.Array) -> pa.Array:
    """Which lists of ``raw`` hold exactly ``elements``."""
    lengths = np.asarray(pc.fill_null(pc.list_value_length(raw), -1))
    rows = np.flatnonzero(lengths == len(elements))
    mask = np.zeros(len(raw), dtype=bool)
    if len(rows):
        flat = pc.list_flatten(raw.take(pa.array(rows)))
        expected = pa.concat_arrays([elements.cast(flat.type)] * len(rows))
        same = np.asarray(pc.fill_null(pc.equal(flat, expected), False)).reshape(len(rows), len(elements))
        mask[rows] = same.all(axis=1)
    return pa.array(mask)


def _unavailable_uuid() -> str:
    """The UUID Debezium sends in place of an untouched TOASTed uuid array: a name-based one (version 3) of the
    placeholder's bytes, as Java's ``UUID.nameUUIDFromBytes`` makes it."""
    digest = hashlib.md5(UNAVAILABLE_VALUE.encode(), usedforsecurity=False).digest()
    return str(uuid.UUID(bytes=digest, version=3))


_TEXT_PLACEHOLDER = pa.array([UNAVAILABLE_VALUE])
_NUMBERS_PLACEHOLDER = pa.array(list(UNAVAILABLE_VALUE.encode()), pa.int64())
# An untouched TOASTed array as Debezium sends it, by its elements' type (PostgreSQL's name, as the catalog gives
# an array's; observed on PostgreSQL 15 with Debezium 3.4): the placeholder as the one element of a text-like array,
# its base64 in a bytea one, a UUID made from it in a uuid one, and its bytes, one a number, as the elements of an
# integer or date one. An array of any other type arrives as NULL, which no event tells from a NULL (README:
# REPLICA IDENTITY FULL sends its value); a list is read as the placeholder only when it is exactly its form.
_ARRAY_PLACEHOLDER: dict[str, pa.Array] = {
    **dict.fromkeys(("text", "varchar", "bpchar", "char", "json", "jsonb"), _TEXT_PLACEHOLDER),
    "bytea": pa.array([_UNAVAILABLE_BASE64]),
    "uuid": pa.array([_unavailable_uuid()]),
    **dict.fromkeys(("int4", "int8", "date"), _NUMBERS_PLACEHOLDER),
}


def untouched_toast_arrives_null(contract: TableContract) -> list[str]:
    """The columns of ``contract`` whose value, stored out of line and left untouched by an update, Debezium sends
    as NULL — arrays whose elements have no form in :data:`_ARRAY_PLACEHOLDER` — unless the table's replica
    identity is FULL (then it sends the value): there a NULL may stand for a value silver cannot carry forward."""
    if contract.replica_identity == "full":
        return []
    return [
        c.name
        for c in contract.columns
        if c.semantic == "array" and c.items is not None and c.items.pg_type not in _ARRAY_PLACEHOLDER
    ]


def _unavailable_lists(n: int, masks: list[tuple[str, np.ndarray]]) -> pa.Array:
    """Per row, the names whose mask is set there (in column order), built from the masks without a loop."""
    if not masks:
        return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string()))
    hits = np.stack([mask for _, mask in masks], axis=1)  # one row per record, one column per name
    _, columns = np.nonzero(hits)  # row-major: each row's names in column order
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(hits.sum(axis=1), out=offsets[1:])
    names = pa.array([name for name, _ in masks], pa.string()).take(pa.array(columns))
    return pa.ListArray.from_arrays(pa.array(offsets), names)


_WIRE_PRECISION = 38  # a decimal128's: room for any value base64_unscaled reads, at any scale up to 38


def _variable_decimals(raw: pa.Array, target: pa.DataType, name: str) -> tuple[pa.Array, list[_Check]]:
    """``{scale, value}`` structs → fixed-scale decimals, with integer arithmetic on the unscaled values.

    The usual value (at most seven bytes, a scale at most the column's) is decoded for the whole column at
    once and rescaled by Arrow's cast, one call per scale the batch holds; the rest one at a time (a Decimal
    object would cost ~30 µs; rescaling the unscaled integer and writing its two's-complement bytes straight
    into the Arrow buffer ~1.5 µs).
    """
    n, width = len(raw), target.byte_width
    valid = np.asarray(pc.fill_null(pc.is_valid(raw), False))
    scale_column, value_column = pc.struct_field(raw, "scale"), pc.struct_field(raw, "value")
    if pa.types.is_integer(scale_column.type) and _holds_bytes(value_column.type):
        present = valid & np.asarray(pc.is_valid(scale_column)) & np.asarray(pc.is_valid(value_column))
        scales = np.asarray(pc.fill_null(scale_column, 0).cast(pa.int64()))
        read, unscaled = base64_unscaled(*column_bytes(value_column), present)
    else:  # not what the wire schema declares: one at a time, refused with the reason that gives
        scales = unscaled = np.zeros(n, dtype=np.int64)
        read = np.zeros(n, dtype=bool)
    data = np.zeros((n, width), dtype=np.uint8)
    fitted = _fit_in_bulk(unscaled, scales, read, target, data)
    overflow, out_of_range = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    details: dict[str, dict[int, str]] = {Reason.DECIMAL_OVERFLOW: {}, Reason.OUT_OF_RANGE: {}}
    one_at_a_time = np.flatnonzero(valid & ~fitted)
    taken = pa.array(one_at_a_time, pa.int64())
    for index, scale, value in zip(
        one_at_a_time.tolist(), scale_column.take(taken).to_pylist(), value_column.take(taken).to_pylist(), strict=True
    ):
        try:
            exact = int.from_bytes(binascii.a2b_base64(value), "big", signed=True)
            exact = fit_unscaled(exact, int(scale), target.precision, target.scale)
        except OutOfRangeError as exc:
            out_of_range[index] = True
            details[Reason.OUT_OF_RANGE][index] = f"column {name}: {exc}"
            continue
        except (ValueError, TypeError, binascii.Error) as exc:
            overflow[index] = True
            details[Reason.DECIMAL_OVERFLOW][index] = f"column {name}: {exc}"
            continue
        data[index] = np.frombuffer(exact.to_bytes(width, "little", signed=True), dtype=np.uint8)
    validity = pa.array(valid & ~overflow & ~out_of_range).buffers()[1]
    array = pa.Array.from_buffers(target, n, [validity, pa.py_buffer(data)])
    checks = [
        _Check(mask, reason, next(iter(details[reason].values())), each=details[reason])
        for mask, reason in ((overflow, Reason.DECIMAL_OVERFLOW), (out_of_range, Reason.OUT_OF_RANGE))
        if mask.any()
    ]
    return array, checks


def _fit_in_bulk(
    unscaled: np.ndarray, scales: np.ndarray, read: np.ndarray, target: pa.DataType, data: np.ndarray
) -> np.ndarray:
    """Writes into ``data`` (a row of ``target``'s bytes per value) the rows of ``read`` that Arrow's cast
    takes up to the target's scale exactly, and returns them: those of a scale at most the target's and few
    enough places below it that no unscaled value :func:`base64_unscaled` reads can exceed its precision.
    The others are for :func:`fit_unscaled`, one at a time."""
    places = target.scale - scales
    fits = read & (places >= 0) & (places <= target.precision - BULK_UNSCALED_DIGITS) & (scales <= _WIRE_PRECISION)
    width = target.byte_width
    for scale in np.unique(scales[fits]).tolist():
        rows = np.flatnonzero(fits & (scales == scale))
        wire = np.zeros((len(rows), 16), dtype=np.uint8)  # each a decimal128 of the value's own scale
        wire[:, :8] = unscaled[rows].astype("<i8").view(np.uint8).reshape(-1, 8)
        wire[:, 8:] = np.where(unscaled[rows] < 0, 0xFF, 0).astype(np.uint8)[:, None]
        exact = pa.Array.from_buffers(pa.decimal128(_WIRE_PRECISION, scale), len(rows), [None, pa.py_buffer(wire)])
        cast = pc.cast(exact, target)
        data[rows] = np.frombuffer(cast.buffers()[1], dtype=np.uint8).reshape(-1, width)[
            cast.offset : cast.offset + len(rows)
        ]
    fitted: np.ndarray = fits
    return fitted


def _base64_column(raw: pa.Array, target: pa.DataType, name: str) -> tuple[pa.Array, list[_Check]]:
    """Base64 texts → bytes, decoded for the whole column at once (the TOAST placeholder too: the caller makes
    it null); a text the bulk decoder leaves is decoded one at a time, refused when it is not base64."""
    if not _holds_bytes(raw.type):
        return _per_value(raw, target, _base64, Reason.WRONG_TYPE, name)
    n = len(raw)
    asked = np.asarray(pc.is_valid(raw))
    read, data, ends = base64_decoded(*column_bytes(raw), asked)
    if not read.any() or ends[-1] >= _LARGEST_BINARY:  # none read (long texts), or more than int32 offsets hold
        return _per_value(raw, target, _base64, Reason.WRONG_TYPE, name)
    validity = pa.array(read).buffers()[1]
    array = pa.Array.from_buffers(pa.binary(), n, [validity, pa.py_buffer(ends.astype(np.int32)), pa.py_buffer(data)])
    rest = np.flatnonzero(asked & ~read)
    if not len(rest):
        return array.cast(target), []
    one_at_a_time, checks = _per_value(raw.take(pa.array(rest)), target, _base64, Reason.WRONG_TYPE, name)
    others = np.zeros(n, dtype=bool)
    others[rest] = True
    array = pc.replace_with_mask(array.cast(target), pa.array(others), one_at_a_time)
    return array, [check._replace(mask=_spread(check.mask, rest, n)) for check in checks]


def _spread(mask: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """A mask over ``rows`` (of ``n``) as one over all ``n``."""
    spread = np.zeros(n, dtype=bool)
    spread[rows[mask]] = True
    return spread


_LARGEST_BINARY = 2**31  # a binary array's int32 offsets


def _holds_bytes(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    )


def _variable_decimal(value: object, target: pa.DataType) -> Decimal:
    """One ``{scale, value}`` at the scale of ``target``, or ValueError when it does not fit."""
    assert isinstance(value, dict)
    unscaled = int.from_bytes(binascii.a2b_base64(value["value"]), "big", signed=True)
    fitted = fit_unscaled(unscaled, int(value["scale"]), target.precision, target.scale)
    return Decimal(f"{fitted}E-{target.scale}")


def _base64(value: object) -> object:
    assert isinstance(value, str)
    return base64.b64decode(value, validate=True)


def _per_value(
    raw: pa.Array, target: pa.DataType, convert: Callable[[Any], object], reason: str, name: str
) -> tuple[pa.Array, list[_Check]]:
    """Python conversion for the few wire forms Arrow cannot convert itself; bad values are flagged.

    Whatever a conversion raises on one value fails that value's row alone: a wrong-typed or extreme value
    must never end the batch.
    """
    out: list[object] = []
    failed: dict[str, tuple[np.ndarray, dict[int, str]]] = {}
    for index, value in enumerate(raw.to_pylist()):
        if value is None:  # (a placeholder is converted like any value: the caller nulls its forms)
            out.append(None)
            continue
        try:
            converted = convert(value)
            if isinstance(converted, Decimal):
                converted = _fit_decimal(converted, target)
            out.append(converted)
        except Exception as exc:  # any failure of one value is its row's alone
            out.append(None)
            why = Reason.OUT_OF_RANGE if isinstance(exc, OutOfRangeError) else reason
            rows, details = failed.setdefault(why, (np.zeros(len(raw), dtype=bool), {}))
            rows[index] = True
            details[index] = f"column {name}: {str(exc) or type(exc).__name__}"
    array = pa.array(out, target)
    return array, [_Check(rows, why, next(iter(each.values())), each=each) for why, (rows, each) in failed.items()]


def _fit_decimal(value: Decimal, target: pa.DataType) -> Decimal:
    """``value`` at the target scale, or ValueError when that would round it or overflow the precision."""
    scale, precision = target.scale, target.precision
    with localcontext(Context(prec=precision + scale + len(value.as_tuple().digits) + 2)):
        quantized = value.quantize(Decimal(1).scaleb(-scale))
    if quantized != value:
        raise ValueError(f"{value} needs more than {scale} decimal places")
    if quantized and quantized.adjusted() + 1 > precision - scale:
        raise ValueError(f"{value} does not fit decimal({precision}, {scale})")
    return quantized


def _convert_list(column: Column, raw: pa.Array, target: pa.DataType) -> tuple[pa.Array, list[_Check]]:
    items = column.items
    assert items is not None
    if items.semantic in _LEAF_UNITS:
        return _convert_items(column, raw, target)
    convert: Callable[[Any], object]
    if items.semantic == "variable_decimal":
        convert = functools.partial(_variable_decimal, target=target.value_type)
    elif items.semantic == "bytes":
        convert = _base64
    else:
        texts = pa.types.is_list(raw.type) and pa.types.is_string(raw.type.value_type)
        checks = _java_array_names(raw, column.name) if texts else []
        return pc.cast(raw, target), checks

    def each(values: object) -> object:
        assert isinstance(values, list)
        return [None if v is None else convert(v) for v in values]

    return _per_value(raw, target, each, Reason.WRONG_TYPE, column.name)


# Java's name for an array object, which is what Debezium sends for each inner array of a text-like value with more
# dimensions than its column declares (PostgreSQL does not hold a column to them; other element types arrive as
# NULLs, which no reader can tell from real ones).
_JAVA_ARRAY_NAME = r"^\[L[A-Za-z0-9_.$]+;@[0-9a-f]+$"


def _java_array_names(raw: pa.Array, name: str) -> list[_Check]:
    """The rows of a list of strings holding an element that is Java's name for an array."""
    flat = pc.list_flatten(raw)
    if not pc.any(pc.starts_with(flat, "[L")).as_py():  # nearly always: one pass, nothing to do
        return []
    found = pc.fill_null(pc.match_substring_regex(flat, _JAVA_ARRAY_NAME), False)
    if not pc.any(found).as_py():
        return []
    rows = np.zeros(len(raw), dtype=bool)
    rows[np.asarray(pc.list_parent_indices(raw))[np.asarray(found)]] = True
    first = flat.filter(found)[0].as_py()
    detail = (
        f"column {name}: an element reads {first!r}, Java's name for an array: the value has more dimensions than "
        "the column declares (PostgreSQL does not enforce them), and Debezium sends no inner array's elements"
    )
    return [_Check(rows, Reason.WRONG_TYPE, detail)]


def _convert_items(column: Column, raw: pa.Array, target: pa.DataType) -> tuple[pa.Array, list[_Check]]:
    """A list of days, microseconds or milliseconds: its elements converted like a column of them, a row
    failing when any of its elements does."""
    assert column.items is not None
    elements, element_checks = _convert_unit(column.items, pc.list_flatten(raw), target.value_type, column.name)
    lengths = np.asarray(pc.fill_null(pc.list_value_length(raw), 0), dtype=np.int32)
    offsets = np.zeros(len(raw) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    array = pa.ListArray.from_arrays(pa.array(offsets), elements, type=target, mask=pc.is_null(raw))
    if not element_checks:
        return array, []
    parents = np.asarray(pc.list_parent_indices(raw))
    checks = []
    for check in element_checks:
        rows = np.zeros(len(raw), dtype=bool)
        rows[parents[check.mask]] = True
        each: dict[int, str] = {}  # a row's first failing element speaks for it
        for element, detail in (check.each or {}).items():
            each.setdefault(int(parents[element]), detail)
        checks.append(check._replace(mask=rows, each=each or None))
    return array, checks
