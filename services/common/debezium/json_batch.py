"""Debezium JSON (JsonConverter, with or without the embedded schema) → typed Arrow rows, in bulk.

The values of one topic's batch are parsed in one native pass (:class:`JsonArrowReader`) against the
explicit wire schema derived from the table contract, so decimals are parsed exactly and no per-record
Python runs on the happy path. That reader accepts only what it converts exactly and stops at the first
value it rejects: the rows before it are kept, the rejected value goes through Arrow's general JSON reader
on its own (which either reads it — a form the fast reader leaves to it, or a new column — or finds it
poison), and the fast reader goes on after it. Arrow's reader bisects what it is given, so good values
still decode in bulk and only a poison record ends up alone, as a failure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from services.common.contracts.arrow import arrow_type
from services.common.contracts.model import TableContract
from services.common.debezium.arrow_reader import VARIABLE_SCALE, JsonArrowReader, UnsupportedSchemaError
from services.common.debezium.envelope import EnvelopeConverter, Origin
from services.common.debezium.records import DecodeFailure, DecodeResult, Reason
from services.common.kafka import Message
from services.common.kafka.message_columns import MessageBatch

__all__ = ["JsonEventDecoder"]

_MIN_BLOCK = 1 << 22
# After this many values of one batch rejected by the fast reader, Arrow's reader takes the rest: values in
# a form only it reads (a new column, a decimal as a string) would otherwise be read one call each.
_MAX_REJECTIONS = 16
_WRAPPED = b'{"schema":'
_PAYLOAD = b',"payload":'


def _payload_of(value: bytes) -> bytes | None:
    """The envelope inside JsonConverter's ``{"schema": …, "payload": …}`` (schemas.enable=true).

    The converter writes ``schema`` first and ``payload`` last, so the envelope is the text between the
    last ``,"payload":`` and the closing brace; a value that only looks wrapped fails to parse later and
    goes to the DLQ with its original bytes.
    """
    start = value.rfind(_PAYLOAD)
    if start < 0 or not value.endswith(b"}"):
        return None
    return value[start + len(_PAYLOAD) : -1]


class JsonEventDecoder:
    """Decodes the Debezium JSON events of one table into rows of its lake schema."""

    def __init__(self, contract: TableContract, *, max_value_bytes: int = 8 << 20) -> None:
        self.contract = contract
        self._converter = EnvelopeConverter(contract)
        self.schema = self._converter.schema
        self._max_value_bytes = max_value_bytes
        try:
            self._fast: JsonArrowReader | None = JsonArrowReader(
                _fast_wire_schema(contract, self._converter.wire_schema),
                strict=("before", "after"),
                envelope="payload",
            )
        except UnsupportedSchemaError:  # a type only Arrow's reader builds: every value goes there
            self._fast = None

    # --- public ---------------------------------------------------------------------------------

    def decode(self, topic: str, batch: MessageBatch, ingested_at_us: int) -> DecodeResult:
        """Rows for ``batch`` (of one topic, each partition's messages in offset order), failures and the
        tombstone count."""
        origin = Origin(topic, ingested_at_us)
        tables: list[pa.Table] = []
        failures: list[DecodeFailure] = []
        if self._fast is None:
            self._decode_general(batch, origin, tables, failures)
        else:
            self._decode_fast(self._fast, batch, origin, tables, failures)
        return DecodeResult.of(self.schema, tables, failures, tombstones=batch.tombstones)

    # --- parsing --------------------------------------------------------------------------------

    def _decode_fast(
        self,
        reader: JsonArrowReader,
        batch: MessageBatch,
        origin: Origin,
        out: list[pa.Table],
        failures: list[DecodeFailure],
    ) -> None:
        """The fast reader over the batch; each value it rejects goes alone through the general path."""
        start = rejections = 0
        while start < len(batch):
            read = reader.read(batch.values, start, max_bytes=self._max_value_bytes)
            if read.rows.num_rows:
                rows = batch.part(start, read.stop) if read.taken is None else batch.take(read.taken)
                self._convert(read.rows, rows, origin, out, failures)
            if read.rejected is None:
                return
            rejections += 1
            if rejections > _MAX_REJECTIONS:
                self._decode_general(batch.part(read.stop), origin, out, failures)
                return
            self._decode_general(batch.part(read.stop, read.stop + 1), origin, out, failures)
            start = read.stop + 1

    def _decode_general(
        self, batch: MessageBatch, origin: Origin, out: list[pa.Table], failures: list[DecodeFailure]
    ) -> None:
        """Arrow's JSON reader: every form it reads, bisecting down to a poison record."""
        bulk: list[int] = []
        alone: list[int] = []
        values: list[bytes] = []
        limit = self._max_value_bytes
        for index, value in enumerate(batch.value_list()):
            if value is None:
                continue  # a tombstone: counted once for the whole batch
            if len(value) > limit:
                detail = f"value of {len(value)} bytes exceeds the {limit}-byte limit"
                failures.append(DecodeFailure(batch.message(index), Reason.OVERSIZED, detail, "OversizedRecord"))
            elif value.startswith(_WRAPPED) and (payload := _payload_of(value)) is not None:
                bulk.append(index)  # the DLQ still gets the original value
                values.append(payload)
            elif value[:1] != b"{" and value.lstrip()[:1] != b"{":
                # Not a JSON object: never hand it to Arrow (pyarrow 26 crashes on a leading `null`).
                failures.append(_classify(batch.message(index), value, "the value is not a JSON object"))
            elif b"\n" in value:  # cannot share newline-delimited JSON with others
                alone.append(index)
            else:
                bulk.append(index)
                values.append(value)
        if bulk:
            chosen = batch.take(np.array(bulk, dtype=np.int64))
            self._decode_bisect(chosen.with_values(values), origin, out, failures)
        for index in alone:
            self._decode_bisect(batch.part(index, index + 1), origin, out, failures)

    def _convert(
        self, wire: pa.Table, batch: MessageBatch, origin: Origin, out: list[pa.Table], failures: list[DecodeFailure]
    ) -> None:
        table = self._converter.to_lake(wire, batch, origin, failures)
        if table.num_rows:
            out.append(table)

    def _decode_bisect(
        self,
        batch: MessageBatch,
        origin: Origin,
        out: list[pa.Table],
        failures: list[DecodeFailure],
    ) -> None:
        if not len(batch):
            return
        values = cast(list[bytes], batch.value_list())  # the general path hands over no tombstones
        try:
            wire = self._read(values)
            if wire.num_rows != len(batch):
                raise pa.ArrowInvalid(f"{wire.num_rows} rows parsed from {len(batch)} values")
        except pa.ArrowInvalid as exc:
            if len(batch) == 1:
                failures.append(_classify(batch.message(0), values[0], str(exc)))
                return
            for half in batch.split():
                self._decode_bisect(half, origin, out, failures)
            return
        self._convert(wire, batch, origin, out, failures)

    def _read(self, values: Sequence[bytes]) -> pa.Table:
        payload = b"\n".join(values)
        block = max(_MIN_BLOCK, 2 * max(map(len, values)) + 2)
        try:
            table = pj.read_json(
                pa.BufferReader(payload),
                read_options=pj.ReadOptions(use_threads=True, block_size=block),
                parse_options=pj.ParseOptions(
                    explicit_schema=self._converter.wire_schema,
                    unexpected_field_behavior="infer",
                    newlines_in_values=len(values) == 1,
                ),
            ).combine_chunks()
        except UnicodeDecodeError as exc:  # an unexpected field whose *name* is not UTF-8: Arrow raises this
            raise pa.ArrowInvalid(f"a field name is not valid UTF-8: {exc}") from exc
        table.validate(full=True)  # the reader does not check UTF-8; invalid text must not reach Parquet
        return table


def _fast_wire_schema(contract: TableContract, wire: pa.Schema) -> pa.Schema:
    """The wire schema with unconstrained NUMERIC columns read straight into their lake decimals."""
    variable = {c.name: arrow_type(c) for c in contract.columns if c.semantic == "variable_decimal"}

    def image(field: pa.Field) -> pa.Field:
        columns = [
            pa.field(f.name, variable[f.name], metadata=VARIABLE_SCALE) if f.name in variable else f for f in field.type
        ]
        return field.with_type(pa.struct(columns))

    return pa.schema([image(f) if f.name in ("before", "after") else f for f in wire])


def _classify(message: Message, value: bytes, arrow_error: str) -> DecodeFailure:
    """Why one record alone does not parse."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DecodeFailure(message, Reason.INVALID_UTF8, str(exc), "UnicodeDecodeError")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return DecodeFailure(message, Reason.MALFORMED_JSON, str(exc), "JSONDecodeError")
    if not isinstance(document, dict):
        return DecodeFailure(message, Reason.MALFORMED_JSON, "the value is not a JSON object", "JSONDecodeError")
    if "decimal" in arrow_error.lower():
        return DecodeFailure(message, Reason.DECIMAL_OVERFLOW, arrow_error, "DecimalOverflow")
    return DecodeFailure(message, Reason.WRONG_TYPE, arrow_error, "TypeMismatch")
