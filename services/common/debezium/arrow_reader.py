"""Bulk JSON → Arrow by an explicit schema, in one native pass per value (``_jsonarrow``, Rust).

Arrow's own JSON reader tokenizes each value into a generic form before it converts it; this reader
scans each value once, straight into the column buffers of the schema, and is several times faster on
change events. It is deliberately narrow: it accepts only values it can convert exactly (see
``jsonarrow/src/lib.rs``) and stops at the first one it rejects, so the caller keeps the rows before it and
lets Arrow's reader decide about the rejected value.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import pyarrow as pa

from services.common.debezium._jsonarrow import Reader

__all__ = ["JsonArrowReader", "UnsupportedSchemaError"]


class UnsupportedSchemaError(ValueError):
    """The schema has a type the native reader does not build (callers use Arrow's reader instead)."""


class JsonArrowReader:
    """Reads JSON objects into a table of ``schema``.

    Keys of the top-level fields named in ``strict`` (struct fields) must be in the schema; anywhere else an
    unknown key is checked as JSON and skipped.
    """

    def __init__(self, schema: pa.Schema, *, strict: Collection[str] = ()) -> None:
        self.schema = schema
        fields = [(f.name, _spec(f.type, strict=f.name in strict)) for f in schema]
        self._reader = Reader(("struct", fields, False))
        self._type = pa.struct(list(schema))

    def read(self, values: list[bytes], start: int = 0) -> tuple[pa.Table, str | None]:
        """Rows of ``values[start:]`` up to the first rejected value, and why it was rejected (None: all read)."""
        _, rejected, buffers = self._reader.read(values, start)
        root = _array(self._type, buffers)
        assert isinstance(root, pa.StructArray)
        return pa.Table.from_batches([pa.RecordBatch.from_struct_array(root)], schema=self.schema), rejected


_LEAVES: tuple[tuple[Callable[[Any], bool], Callable[[Any], tuple[Any, ...]]], ...] = (
    (pa.types.is_boolean, lambda t: ("bool",)),
    (pa.types.is_signed_integer, lambda t: ("int", t.bit_width)),
    (lambda t: pa.types.is_floating(t) and t.bit_width in (32, 64), lambda t: ("float", t.bit_width)),
    (pa.types.is_string, lambda t: ("string",)),
    (pa.types.is_decimal128, lambda t: ("decimal128", t.precision, t.scale)),
    # a zone is required: an ISO-8601 string with an offset is an instant, without one it would be a guess
    (lambda t: pa.types.is_timestamp(t) and t.unit == "us" and t.tz is not None, lambda t: ("timestamp_us",)),
)


def _spec(arrow: pa.DataType, *, strict: bool = False) -> tuple[Any, ...]:
    """The reader's field tree for ``arrow`` (see ``jsonarrow/src/spec.rs``)."""
    if pa.types.is_list(arrow):
        return ("list", _spec(arrow.value_type))
    if pa.types.is_struct(arrow):
        return ("struct", [(f.name, _spec(f.type)) for f in arrow], strict)
    for matches, spec in _LEAVES:
        if matches(arrow):
            return spec(arrow)
    raise UnsupportedSchemaError(f"no native reader for {arrow}")


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
