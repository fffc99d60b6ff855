"""Bulk JSON → Arrow by an explicit schema, in one native pass per value (``_jsonarrow``, Rust).

Arrow's own JSON reader tokenizes each value into a generic form before it converts it; this reader
scans each value once, straight into the column buffers of the schema, and is several times faster on
change events. It is deliberately narrow: it accepts only values it can convert exactly (see
``native/jsonarrow/src/lib.rs``) and stops at the first one it rejects, so the caller keeps the rows before it and
lets Arrow's reader decide about the rejected value.

No input makes it raise: a value it fails on inside itself (a bug) is rejected like any other, and a failure
of a whole call (``ReaderError``) reads as the value at ``start`` rejected with no rows — the caller hands
that value to Arrow's reader and goes on after it, as for any rejection.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

try:
    from services.common.debezium._jsonarrow import Reader, ReaderError
except ImportError:  # installed without a Rust toolchain: Arrow's reader reads every value
    NATIVE_READER = False
else:
    NATIVE_READER = True

__all__ = ["NATIVE_READER", "VARIABLE_SCALE", "JsonArrowReader", "ReadResult", "UnsupportedSchemaError"]


class UnsupportedSchemaError(ValueError):
    """The schema has a type the native reader does not build (callers use Arrow's reader instead)."""


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Rows read from ``values[start:stop]``; ``taken`` maps them to their values when ``None`` ones were skipped."""

    rows: pa.Table
    stop: int
    rejected: str | None
    taken: np.ndarray | None


class JsonArrowReader:
    """Reads JSON objects into a table of ``schema``.

    Keys of the top-level fields named in ``strict`` (struct fields), and of every struct inside them, must be
    in the schema; anywhere else an unknown key is checked as JSON and skipped. With ``envelope``, a value
    whose first key is ``"schema"`` is Kafka Connect's wrapper and its row is the object under that key.
    """

    def __init__(self, schema: pa.Schema, *, strict: Collection[str] = (), envelope: str | None = None) -> None:
        self.schema = schema
        if not NATIVE_READER:
            raise UnsupportedSchemaError("the native JSON reader is not installed")
        fields = [(f.name, _spec(f, strict=f.name in strict)) for f in schema]
        try:
            self._reader = Reader(("struct", fields, False), envelope)
        except ValueError as exc:  # a form the native reader refuses to build (a field tree nested too deep)
            raise UnsupportedSchemaError(str(exc)) from exc
        self._type = pa.struct(list(schema))

    def read(
        self, values: pa.LargeBinaryArray | Sequence[bytes | None], start: int = 0, *, max_bytes: int = sys.maxsize
    ) -> ReadResult:
        """Rows of ``values[start:]`` up to the first value rejected (a value over ``max_bytes`` is rejected);
        null values are skipped."""
        column = values if isinstance(values, pa.LargeBinaryArray) else pa.array(values, type=pa.large_binary())
        try:
            stop, rejected, buffers, taken = self._reader.read(_buffers(column), start, max_bytes)
        except ReaderError as exc:
            return ReadResult(self.schema.empty_table(), start, f"the native reader failed: {exc}", None)
        root = _array(self._type, buffers)
        assert isinstance(root, pa.StructArray)
        rows = pa.Table.from_batches([pa.RecordBatch.from_struct_array(root)], schema=self.schema)
        return ReadResult(rows, stop, rejected, None if taken is None else np.frombuffer(taken, dtype="<i8"))


VARIABLE_SCALE = {b"cdcflow.json": b"variable_scale"}
"""Field metadata of a decimal field given in JSON as Kafka Connect's ``{"scale": s, "value": base64}``."""

_LEAVES: tuple[tuple[Callable[[Any], bool], Callable[[Any], tuple[Any, ...]]], ...] = (
    (pa.types.is_boolean, lambda t: ("bool",)),
    (pa.types.is_signed_integer, lambda t: ("int", t.bit_width)),
    (lambda t: pa.types.is_floating(t) and t.bit_width in (32, 64), lambda t: ("float", t.bit_width)),
    (pa.types.is_string, lambda t: ("string",)),
    # a zone is required: an ISO-8601 string with an offset is an instant, without one it would be a guess
    (lambda t: pa.types.is_timestamp(t) and t.unit == "us" and t.tz is not None, lambda t: ("timestamp_us",)),
)


def _spec(field: pa.Field, *, strict: bool = False) -> tuple[Any, ...]:
    """The reader's field tree for ``field`` (see ``native/jsonarrow/src/spec.rs``); ``strict`` holds for every
    struct inside it too."""
    arrow = field.type
    if pa.types.is_list(arrow):
        return ("list", _spec(arrow.value_field, strict=strict))
    if pa.types.is_struct(arrow):
        return ("struct", [(f.name, _spec(f, strict=strict)) for f in arrow], strict)
    if pa.types.is_decimal128(arrow) or pa.types.is_decimal256(arrow):
        encoding = "variable_scale" if field.metadata == VARIABLE_SCALE else "number"
        return ("decimal", arrow.precision, arrow.scale, arrow.byte_width, encoding)
    for matches, spec in _LEAVES:
        if matches(arrow):
            return spec(arrow)
    raise UnsupportedSchemaError(f"no native reader for {arrow}")


def _buffers(column: pa.LargeBinaryArray) -> tuple[memoryview | None, memoryview, memoryview, int, int]:
    """The column as the native reader takes it: its buffers as byte views, its offset and length."""
    validity, offsets, data = (None if b is None else memoryview(b).cast("B") for b in column.buffers())
    assert offsets is not None
    if data is None:  # a column of nulls only may have no data buffer
        data = memoryview(b"")
    return validity, offsets, data, column.offset, len(column)


def _array(arrow: pa.DataType, node: Sequence[Any]) -> pa.Array:
    """An Arrow array from the reader's ``(length, null_count, validity, buffers, children)`` tree."""
    length, null_count, validity, buffers, children = node
    if pa.types.is_struct(arrow):
        child_types = [f.type for f in arrow]
    elif pa.types.is_list(arrow):
        child_types = [arrow.value_type]
    else:
        child_types = []
    return pa.Array.from_buffers(
        arrow,
        length,
        [None if validity is None else pa.py_buffer(validity), *(pa.py_buffer(b) for b in buffers)],
        null_count=null_count,
        children=[_array(t, c) for t, c in zip(child_types, children, strict=True)] or None,
    )
