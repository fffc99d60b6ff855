"""What decoding consumes and produces: Kafka messages in, Arrow rows or failures out.

Decoders return failures as values instead of raising, so the DLQ branch is ordinary data flow; each
failure keeps its raw message so the DLQ gets the original key, value, headers and timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from services.common.kafka import Message

__all__ = ["DecodeFailure", "DecodeResult", "Headers", "Reason"]

Headers = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]]
"""Kafka record headers as the client library hands them over."""


class Reason:
    """Short, stable labels for the ``reason`` of a DLQ'd record (metric label and header)."""

    MALFORMED_JSON = "malformed_json"
    INVALID_UTF8 = "invalid_utf8"
    WRONG_TYPE = "wrong_type"
    DECIMAL_OVERFLOW = "decimal_overflow"
    MISSING_SOURCE = "missing_source"
    MISSING_IMAGE = "missing_image"
    MISSING_KEY = "missing_key"
    UNKNOWN_OP = "unknown_op"
    SCHEMA_MISMATCH = "schema_mismatch"
    OVERSIZED = "oversized"
    UNKNOWN_TABLE = "unknown_table"
    UNSAFE_NAME = "unsafe_name"
    UNKNOWN_SCHEMA = "unknown_schema"
    MALFORMED_AVRO = "malformed_avro"
    TOO_DEEP = "too_deep"  # nested deeper than any Debezium event, refused before a parser sees it
    OUT_OF_RANGE = "out_of_range"  # a time, scale or number outside what the lake type can hold exactly
    DECODER_ERROR = "decoder_error"  # the decoder raised on this record alone: a defect, isolated by bisection
    DECODER_CRASH = "decoder_crash"  # decoding this record alone killed an isolated child process


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    message: Message
    reason: str
    detail: str
    error_class: str = "DecodeError"
    stage: str = "decode"
    column: str | None = None  # the column a value failure or a schema mismatch is about, when the reader knows


@dataclass(slots=True)
class DecodeResult:
    """Rows (lake schema) and failures, each partition's in offset order, and how many were tombstones."""

    rows: pa.Table
    failures: list[DecodeFailure] = field(default_factory=list)
    tombstones: int = 0

    @classmethod
    def of(
        cls, schema: pa.Schema, tables: list[pa.Table], failures: list[DecodeFailure], tombstones: int
    ) -> DecodeResult:
        """The result of a batch decoded in ``tables`` parts (more than one when records had to be isolated)."""
        if not tables:
            rows = schema.empty_table()
        elif len(tables) == 1:
            rows = tables[0]
        else:  # put the parts back in order
            rows = pa.concat_tables(tables).sort_by(_ROW_ORDER)
        failures.sort(key=_failure_order)
        return cls(rows, failures, tombstones)

    def rows_by_partition(self) -> dict[int, pa.Table]:
        """Each partition's rows, in offset order.

        A batch of several partitions is split into copies, not slices: a slice would keep the whole batch
        alive until the last of its partitions is flushed, beyond what the buffer budget accounts for.
        """
        if not self.rows.num_rows:
            return {}
        partitions = self.rows.column("_kafka_partition").to_numpy()
        first = int(partitions[0])
        if (partitions == first).all():
            return {first: self.rows}
        rows = self.rows
        if (np.diff(partitions) < 0).any():  # not grouped by partition: group them, keeping offset order
            order = np.argsort(partitions, kind="stable")
            rows, partitions = rows.take(pa.array(order)), partitions[order]
        starts = [0, *(np.flatnonzero(np.diff(partitions)) + 1).tolist()]
        stops = [*starts[1:], len(partitions)]
        return {int(partitions[a]): _copy(rows.slice(a, b - a)) for a, b in zip(starts, stops, strict=True)}

    def unknown_columns(self) -> set[str]:
        """Columns that arrived but are not in the contract: a candidate additive evolution."""
        return {f.column for f in self.failures if f.reason == Reason.SCHEMA_MISMATCH and f.column}

    @property
    def row_count(self) -> int:
        return int(self.rows.num_rows)


_ROW_ORDER = [("_kafka_partition", "ascending"), ("_kafka_offset", "ascending")]


def _failure_order(failure: DecodeFailure) -> tuple[int, int]:
    return int(failure.message.partition() or 0), int(failure.message.offset() or 0)


def _copy(table: pa.Table) -> pa.Table:
    """``table`` (not empty) in buffers of its own.

    Concatenating allocates new buffers even for one array; done on the rows as one struct array, it copies
    every column, nested ones included, in a single call instead of one per column.
    """
    rows = pa.concat_arrays([batch.to_struct_array() for batch in table.to_batches()])
    return pa.Table.from_batches([pa.RecordBatch.from_struct_array(rows)], schema=table.schema)
