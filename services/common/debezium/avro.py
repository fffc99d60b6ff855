"""Debezium Avro (Kafka Connect AvroConverter) → typed Arrow rows, in two framings.

* Confluent wire format: ``0x00``, a 4-byte big-endian schema id, then Avro binary; the writer schema
  comes from a schema registry.
* Avro single-object encoding: ``0xC3 0x01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the
  writer schema, then Avro binary; the writer schema is one derived from the table's contract.

Avro has no bulk reader in Python, so each value is read with fastavro on its own; everything after that
is batched: the decoded events are turned into one Arrow table of the converter's wire schema and handed
to the same :class:`EnvelopeConverter` the JSON decoder uses, so validation, TOAST, key-only deletes and
metadata are identical. Per record, only the few values Arrow cannot take as they come are touched
(bytes → base64 text, as on the JSON wire), following a plan made once per writer schema.

Its length (past the ~400 lines of most modules): both framings share the reading plan, the registry
client and the hand-over to the converter; split, each half would import most of the other.
"""

from __future__ import annotations

import base64
import copy
import functools
import io
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from fastavro import parse_schema, schemaless_reader

from services.common.contracts.model import Column, TableContract
from services.common.debezium.avro_schema import EnvelopeSchema, unreadable_reason
from services.common.debezium.envelope import EnvelopeConverter, Origin
from services.common.debezium.records import DecodeFailure, DecodeResult, Reason
from services.common.debezium.registry import SchemaRegistryClient, UnknownSchemaError
from services.common.debezium.values import OutOfRangeError, fit_unscaled, micros_to_datetime
from services.common.errors import TerminalError
from services.common.kafka import Message
from services.common.kafka.message_columns import MessageBatch

__all__ = [
    "CONFLUENT_MAGIC",
    "SINGLE_OBJECT_MARKER",
    "AvroEventDecoder",
    "ConfluentFraming",
    "Framing",
    "PoisonRecordError",
    "SingleObjectFraming",
]

CONFLUENT_MAGIC = b"\x00"
SINGLE_OBJECT_MARKER = b"\xc3\x01"

# What Arrow raises when a decoded value does not fit the contract's type.
_MISFIT = (pa.ArrowException, ValueError, TypeError, OverflowError)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class PoisonRecordError(TerminalError):
    """One record can never be read (its ``reason`` labels the DLQ record); the decoder turns it into a
    failure of that record alone. Framings raise it for values that are not theirs."""

    def __init__(self, reason: str, detail: str, error_class: str, *, column: str | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.error_class, self.column = reason, detail, error_class, column


def _malformed(detail: str) -> PoisonRecordError:
    return PoisonRecordError(Reason.MALFORMED_AVRO, detail, "MalformedAvro")


# --- framings -----------------------------------------------------------------------------------


class Framing(Protocol):
    """How a value names its writer schema: a fixed-size header, then Avro binary."""

    header_size: int

    def header(self, value: bytes) -> bytes:
        """The header bytes (the writer schema's cache key); PoisonRecordError for a value of another framing."""
        ...

    def writer_schema(self, header: bytes) -> dict[str, Any]:
        """The parsed writer schema; raises UnknownSchemaError (terminal) or a TransientError."""
        ...


def _check_header(value: bytes, marker: bytes, size: int, framing: str) -> bytes:
    if len(value) < size or not value.startswith(marker):
        detail = f"not {framing}: starts with {value[: len(marker)].hex() or 'nothing'}, expected {marker.hex()}"
        raise _malformed(detail)
    return value[:size]


class ConfluentFraming:
    """Magic byte 0, 4-byte big-endian schema id; schemas from a Confluent-compatible registry."""

    header_size = 5

    def __init__(self, registry: SchemaRegistryClient) -> None:
        self._registry = registry

    def header(self, value: bytes) -> bytes:
        return _check_header(value, CONFLUENT_MAGIC, self.header_size, "Confluent wire format")

    def writer_schema(self, header: bytes) -> dict[str, Any]:
        return self._registry.schema(int.from_bytes(header[1:5], "big"))

    def read(self, value: bytes) -> Any:
        """One value as its writer schema's plain data (records as dicts): for a connector's records that are
        no change event (its notifications), read seldom. Raises PoisonRecordError for a value of another
        framing or one its schema does not read, UnknownSchemaError or a TransientError from the registry."""
        header = self.header(value)
        try:
            return schemaless_reader(io.BytesIO(value[self.header_size :]), parse_schema(self.writer_schema(header)))
        except (ValueError, TypeError, EOFError, IndexError, KeyError) as exc:
            raise _malformed(f"the value does not read with its writer schema: {exc}") from None


class SingleObjectFraming:
    """Marker C3 01, 8-byte fingerprint; schemas are the envelopes derived from known contract versions."""

    header_size = 10

    def __init__(self, envelopes: Iterable[EnvelopeSchema]) -> None:
        self._by_fingerprint = {e.fingerprint: e.parsed for e in envelopes}

    def header(self, value: bytes) -> bytes:
        return _check_header(value, SINGLE_OBJECT_MARKER, self.header_size, "Avro single-object encoding")

    def writer_schema(self, header: bytes) -> dict[str, Any]:
        found = self._by_fingerprint.get(header[2:])
        if found is None:
            raise UnknownSchemaError(f"no contract's envelope schema has the fingerprint {header[2:].hex()}")
        return found


# --- value fixes ------------------------------------------------------------------------------
# Arrow takes ints, strings, Decimals and lists as they come; these turn the rest into the JSON wire
# forms EnvelopeConverter expects. Each runs only on non-null values of fields that need it.

Fix = Callable[[Any], Any]


def _base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _variable_decimal(value: dict[str, Any]) -> dict[str, Any]:
    value["value"] = _base64(value["value"])
    return value


def _millis_to_micros(value: int) -> int:
    """Milliseconds as microseconds, refused when they leave int64 (PostgreSQL's ``infinity`` does)."""
    micros = value * 1_000
    if not _INT64_MIN <= micros <= _INT64_MAX:
        raise OutOfRangeError(f"{value} ms overflows int64 microseconds")
    return micros


class _DecimalOverflowError(ValueError):
    """A decimal that does not fit the contract's precision and scale."""


def _unscaled_decimal(value: bytes, *, scale: int, precision: int, target_scale: int) -> Decimal:
    """An Avro decimal's two's-complement bytes at the contract's scale, exactly.

    fastavro would build the Decimal itself, in time quadratic in the bytes (a 1 MB value never ends) and
    rounded to the writer schema's precision; bounding the value by the contract's type first costs nothing.
    """
    unscaled = int.from_bytes(value, "big", signed=True)
    try:
        fitted = fit_unscaled(unscaled, scale, precision, target_scale)
    except OutOfRangeError:
        raise
    except ValueError as exc:
        raise _DecimalOverflowError(str(exc)) from None
    return Decimal(f"{fitted}E-{target_scale}")


def _not_a_decimal_column(value: object) -> object:
    raise TypeError("an Avro decimal for a column that is no decimal")


def _nanos_to_micros(value: int) -> int:
    return value // 1_000


def _micros_to_iso(value: int) -> str:
    """An instant in microseconds as the ISO text a ZonedTimestamp is; years 1-9999 only."""
    return micros_to_datetime(value).isoformat()


def _millis_to_iso(value: int) -> str:
    return _micros_to_iso(_millis_to_micros(value))


def _present(value: object) -> bool:
    """A column the contract lacks: only whether it holds a value matters (it is a schema mismatch)."""
    return True


def _each(fix: Fix) -> Fix:
    def each(values: list[Any]) -> list[Any]:
        return [None if v is None else fix(v) for v in values]

    return each


_BY_LOGICAL_TYPE: dict[tuple[str, str], Fix] = {("uuid", "uuid"): str}
# Avro's time logical types are read as the integers they are (the logical type is taken off the writer
# schema): fastavro would build datetimes, and fail with an opaque error on any beyond year 9999. Each
# entry turns the integer into the wire form, with every unit change checked (None: it already is).
_TIME_LOGICAL_TYPES: dict[tuple[str, str], Fix | None] = {
    ("date", "date"): None,
    ("time", "time-millis"): _millis_to_micros,
    ("time", "time-micros"): None,
    **{("timestamp", kind): _millis_to_micros for kind in ("timestamp-millis", "local-timestamp-millis")},
    **{("timestamp", kind): None for kind in ("timestamp-micros", "local-timestamp-micros")},
    **{("timestamp_millis", kind): None for kind in ("timestamp-millis", "local-timestamp-millis")},
    ("timestamptz", "timestamp-millis"): _millis_to_iso,
    ("timestamptz", "timestamp-micros"): _micros_to_iso,
}
# Debezium's adaptive precision sends timestamp(0-3)/time(0-3) in milliseconds and (7-9) in nanoseconds
# under their own names; JSON without a schema cannot tell, Avro can.
_BY_CONNECT_NAME: dict[tuple[str, str], Fix] = {
    ("timestamp", "io.debezium.time.Timestamp"): _millis_to_micros,
    ("timestamp", "io.debezium.time.NanoTimestamp"): _nanos_to_micros,
    ("time", "io.debezium.time.Time"): _millis_to_micros,
    ("time", "io.debezium.time.NanoTime"): _nanos_to_micros,
}


def _resolve(avro_type: Any, named: dict[str, Any]) -> Any:
    """The one non-null branch of an optional type, with a named reference looked up."""
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        avro_type = branches[0] if len(branches) == 1 else None
    return named.get(avro_type, avro_type) if isinstance(avro_type, str) else avro_type


def _fix_for(column: Column, avro_type: Any, named: dict[str, Any]) -> Fix | None:
    """How a writer field's decoded values become the wire form of ``column`` (None: as they are)."""
    resolved = _resolve(avro_type, named)
    spec = resolved if isinstance(resolved, dict) else {"type": resolved}
    base = spec.get("type")
    if column.semantic == "array":
        assert column.items is not None
        inner = _fix_for(column.items, spec.get("items"), named) if base == "array" else None
        return _each(inner) if inner is not None else None
    if column.semantic == "bytes":
        return _base64 if base in ("bytes", "fixed") else None
    if column.semantic == "variable_decimal":
        return _variable_decimal if base == "record" else None
    return _logical_fix(column, spec, resolved is spec)


def _logical_fix(column: Column, spec: dict[str, Any], own: bool) -> Fix | None:
    """The fix by the writer's logical type or Connect name; ``own``: ``spec`` is the plan's to change."""
    kind = (column.semantic, str(spec.get("logicalType")))
    if kind[1] in _BYTES_LOGICAL_TYPES:  # read as bytes (see _strip_decimals)
        if kind != ("decimal", "decimal"):
            return _not_a_decimal_column
        assert column.precision is not None
        assert column.scale is not None
        scale = int(spec.get("scale", 0))
        return functools.partial(_unscaled_decimal, scale=scale, precision=column.precision, target_scale=column.scale)
    if kind in _TIME_LOGICAL_TYPES and own:
        del spec["logicalType"]  # in the plan's own copy of the writer schema: fastavro reads the integer
        return _TIME_LOGICAL_TYPES[kind]
    logical = _BY_LOGICAL_TYPE.get(kind)
    return logical or _BY_CONNECT_NAME.get((column.semantic, str(spec.get("connect.name"))))


_BYTES_LOGICAL_TYPES = frozenset({"decimal", "big-decimal"})


def _strip_decimals(node: Any) -> None:
    """Take the decimal logical types off a writer schema (its plan's copy): fastavro hands over the bytes."""
    if isinstance(node, list):
        for item in node:
            _strip_decimals(item)
    elif isinstance(node, dict):
        if node.get("logicalType") in _BYTES_LOGICAL_TYPES:
            del node["logicalType"]
        for key, item in node.items():
            if key != "__named_schemas":  # the same dicts as the definitions inline
                _strip_decimals(item)
        for definition in node.get("__named_schemas", {}).values():
            _strip_decimals(definition)


def _image_fields(writer: dict[str, Any]) -> list[dict[str, Any]]:
    """The fields of the envelope's row-image record (``before``/``after``); empty if it has none."""
    named: dict[str, Any] = writer.get("__named_schemas", {})
    for field in writer.get("fields", []):
        if field.get("name") in ("before", "after"):
            image = _resolve(field.get("type"), named)
            if isinstance(image, dict) and image.get("type") == "record":
                return list(image.get("fields", []))
    return []


@dataclass(frozen=True, slots=True)
class _Plan:
    """One writer schema, read for one contract: the fastavro schema and the per-field fixes."""

    writer: dict[str, Any]
    fixes: tuple[tuple[str, Fix], ...]
    unknown: frozenset[str]  # image fields the contract does not have

    @classmethod
    def of(cls, writer: dict[str, Any], contract: TableContract) -> _Plan:
        writer = copy.deepcopy(writer)  # its time and decimal logical types are taken off (see _fix_for)
        columns = {c.name: c for c in contract.columns}
        named: dict[str, Any] = writer.get("__named_schemas", {})
        fixes: list[tuple[str, Fix]] = []
        unknown: set[str] = set()
        for field in _image_fields(writer):
            name = str(field["name"])
            column = columns.get(name)
            fix = _present if column is None else _fix_for(column, field.get("type"), named)
            if column is None:
                unknown.add(name)
            if fix is not None:
                fixes.append((name, fix))
        _strip_decimals(writer)
        return cls(writer, tuple(fixes), frozenset(unknown))

    def read(self, value: bytes, start: int) -> dict[str, Any]:
        """One event as a dict in the wire forms; raises ``PoisonRecordError`` when the bytes are not one record."""
        stream = io.BytesIO(value)
        stream.seek(start)
        try:
            event = schemaless_reader(stream, self.writer)
        except UnicodeDecodeError as exc:
            detail = f"an Avro string is not UTF-8: {exc}"
            raise PoisonRecordError(Reason.INVALID_UTF8, detail, "UnicodeDecodeError") from None
        except Exception as exc:  # fastavro trusts lengths and counts: what one record makes it raise is that record's
            raise _malformed(f"not a record of the writer schema: {exc!r}") from None
        if stream.tell() != len(value):
            raise _malformed(f"{len(value) - stream.tell()} bytes left after the record")
        if not isinstance(event, dict):
            raise _malformed("the writer schema is not a record")
        if self.fixes:
            for image in (event.get("before"), event.get("after")):
                if isinstance(image, dict):
                    self._fix(image)
        return event

    def _fix(self, image: dict[str, Any]) -> None:
        name = ""
        try:
            for name, fix in self.fixes:
                value = image.get(name)
                if value is not None:
                    image[name] = fix(value)
        except OutOfRangeError as exc:
            raise PoisonRecordError(Reason.OUT_OF_RANGE, f"column {name}: {exc}", "OutOfRange", column=name) from None
        except _DecimalOverflowError as exc:
            detail = f"column {name}: {exc}"
            raise PoisonRecordError(Reason.DECIMAL_OVERFLOW, detail, "DecimalOverflow", column=name) from None
        except Exception as exc:  # a value of a type its writer schema did not promise: that record's alone
            raise PoisonRecordError(Reason.WRONG_TYPE, f"column {name}: {exc!r}", "TypeMismatch", column=name) from None


# --- the decoder --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Batch:
    """Messages whose decoded events become one wire table together."""

    messages: MessageBatch
    events: Sequence[dict[str, Any]]


class AvroEventDecoder:
    """Decodes the Debezium Avro events of one table into rows of its lake schema."""

    def __init__(
        self,
        contract: TableContract,
        framing: Framing,
        *,
        max_value_bytes: int = 8 << 20,
        plan_cache_size: int = 256,
    ) -> None:
        self.contract = contract
        self._converter = EnvelopeConverter(contract)
        self.schema = self._converter.schema
        self._framing = framing
        self._max_value_bytes = max_value_bytes
        self._plans: OrderedDict[bytes, _Plan] = OrderedDict()
        self._plan_cache_size = plan_cache_size
        self._wire: dict[frozenset[str], tuple[pa.Schema, pa.Schema]] = {}

    @classmethod
    def confluent(
        cls, contract: TableContract, registry: SchemaRegistryClient, *, max_value_bytes: int = 8 << 20
    ) -> AvroEventDecoder:
        return cls(contract, ConfluentFraming(registry), max_value_bytes=max_value_bytes)

    @classmethod
    def single_object(
        cls,
        contract: TableContract,
        *,
        topic_prefix: str = "cdcflow",
        earlier: Iterable[TableContract] = (),
        max_value_bytes: int = 8 << 20,
    ) -> AvroEventDecoder:
        """Resolves the envelopes of ``contract`` and of ``earlier`` versions (events still in flight)."""
        envelopes = [EnvelopeSchema.of(c, topic_prefix) for c in (*earlier, contract)]
        return cls(contract, SingleObjectFraming(envelopes), max_value_bytes=max_value_bytes)

    # --- public ---------------------------------------------------------------------------------

    def decode(self, topic: str, batch: MessageBatch, ingested_at_us: int) -> DecodeResult:
        """Rows for ``batch`` (of one topic, each partition's messages in offset order), failures and the
        tombstone count.

        Raises a TransientError when the schema registry cannot answer: retrying the batch may succeed.
        """
        failures: list[DecodeFailure] = []
        tombstones = 0
        good: list[int] = []
        events: list[dict[str, Any]] = []
        unknown: set[str] = set()
        missing: dict[bytes, str] = {}  # unknown schemas of this batch: asked once, not per record
        for index, value in enumerate(batch.value_list()):
            if value is None:
                tombstones += 1
            elif len(value) > self._max_value_bytes:
                detail = f"value of {len(value)} bytes exceeds the {self._max_value_bytes}-byte limit"
                failures.append(DecodeFailure(batch.message(index), Reason.OVERSIZED, detail, "OversizedRecord"))
            else:
                try:
                    plan = self._plan(value, missing)
                    events.append(plan.read(value, self._framing.header_size))
                except PoisonRecordError as poison:
                    message = batch.message(index)
                    failures.append(
                        DecodeFailure(message, poison.reason, poison.detail, poison.error_class, column=poison.column)
                    )
                    continue
                good.append(index)
                unknown |= plan.unknown
        tables: list[pa.Table] = []
        origin = Origin(topic, ingested_at_us)
        chosen = batch.take(np.array(good, dtype=np.int64))
        self._convert(_Batch(chosen, events), frozenset(unknown), origin, tables, failures)
        return DecodeResult.of(self.schema, tables, failures, tombstones)

    # --- reading --------------------------------------------------------------------------------

    def _plan(self, value: bytes, missing: dict[bytes, str]) -> _Plan:
        header = self._framing.header(value)
        plan = self._plans.get(header)
        if plan is not None:
            self._plans.move_to_end(header)
            return plan
        if header in missing:
            raise PoisonRecordError(Reason.UNKNOWN_SCHEMA, missing[header], "UnknownSchema")
        try:
            writer = self._framing.writer_schema(header)
            if (unsafe := unreadable_reason(writer)) is not None:
                raise UnknownSchemaError(f"the writer schema cannot be read safely: {unsafe}")
        except UnknownSchemaError as exc:
            missing[header] = str(exc)
            raise PoisonRecordError(Reason.UNKNOWN_SCHEMA, str(exc), "UnknownSchema") from None
        plan = self._plans[header] = _Plan.of(writer, self.contract)
        if len(self._plans) > self._plan_cache_size:
            self._plans.popitem(last=False)
        return plan

    # --- conversion -----------------------------------------------------------------------------

    def _convert(
        self,
        batch: _Batch,
        unknown: frozenset[str],
        origin: Origin,
        out: list[pa.Table],
        failures: list[DecodeFailure],
    ) -> None:
        """Wire table → lake rows; a value Arrow refuses is isolated by bisection, like the JSON decoder."""
        if not batch.events:
            return
        try:
            wire = self._wire_table(batch.events, unknown)
        except _MISFIT as exc:
            if len(batch.events) == 1:
                failures.append(self._misfit(batch.messages.message(0), batch.events[0], exc))
                return
            half = len(batch.events) // 2
            for part in (slice(0, half), slice(half, None)):
                messages = batch.messages.part(part.start, part.stop)
                self._convert(_Batch(messages, batch.events[part]), unknown, origin, out, failures)
            return
        table = self._converter.to_lake(wire, batch.messages, origin, failures)
        if table.num_rows:
            out.append(table)

    def _misfit(self, message: Message, event: dict[str, Any], exc: Exception) -> DecodeFailure:
        """Why one record's values do not fit the contract's types."""
        if outside := self._converter.outside_years(event):
            column, detail = outside
            return DecodeFailure(message, Reason.OUT_OF_RANGE, detail, "OutOfRange", column=column)
        if "decimal" in str(exc).lower():
            return DecodeFailure(message, Reason.DECIMAL_OVERFLOW, str(exc), "DecimalOverflow")
        return DecodeFailure(message, Reason.WRONG_TYPE, str(exc), "TypeMismatch")

    def _wire_table(self, events: Sequence[dict[str, Any]], unknown: frozenset[str]) -> pa.Table:
        loose, wire = self._schemas(unknown)
        table = pa.Table.from_pylist(list(events), schema=loose)
        if loose.equals(wire):
            return table
        arrays = [_cast(_one_chunk(table.column(i)), field.type) for i, field in enumerate(wire)]
        return pa.Table.from_arrays(arrays, schema=wire)

    def _schemas(self, unknown: frozenset[str]) -> tuple[pa.Schema, pa.Schema]:
        """The wire schema (with marker fields for unknown columns), and the same with zoned timestamps
        as text: Arrow builds those from Python strings only by a cast."""
        found = self._wire.get(unknown)
        if found is None:
            wire = self._converter.wire_schema
            if unknown:
                extra = [pa.field(name, pa.bool_()) for name in sorted(unknown)]
                wire = pa.schema([_with_fields(f, extra) if f.name in ("before", "after") else f for f in wire])
            found = self._wire[unknown] = (pa.schema([f.with_type(_text_timestamps(f.type)) for f in wire]), wire)
        return found


def _with_fields(field: pa.Field, extra: list[pa.Field]) -> pa.Field:
    return field.with_type(pa.struct([*field.type, *extra]))


def _text_timestamps(arrow_type: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(arrow_type) and arrow_type.tz is not None:
        return pa.string()
    if pa.types.is_struct(arrow_type):
        return pa.struct([f.with_type(_text_timestamps(f.type)) for f in arrow_type])
    if pa.types.is_list(arrow_type):
        return pa.list_(_text_timestamps(arrow_type.value_type))
    return arrow_type


def _cast(array: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast a wire column; a struct's children are cast separately because the children of a null
    struct hold filler values (empty strings) that would not parse as timestamps."""
    if array.type.equals(target):
        return array
    if pa.types.is_struct(target):
        children = [_cast(child, f.type) for child, f in zip(array.flatten(), target, strict=True)]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=array.is_null())
    return array.cast(target)


def _one_chunk(chunked: pa.ChunkedArray) -> pa.Array:
    return chunked.chunk(0) if chunked.num_chunks == 1 else pa.concat_arrays(chunked.chunks)
