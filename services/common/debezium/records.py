"""What decoding consumes and produces: Kafka messages in, Arrow rows or failures out.

Decoders return failures as values instead of raising, so the DLQ branch is ordinary data flow; each
failure keeps its raw message so the DLQ gets the original key, value, headers and timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    message: Message
    reason: str
    detail: str
    error_class: str = "DecodeError"
    stage: str = "decode"
    column: str | None = None  # the column a schema mismatch is about


@dataclass(slots=True)
class DecodeResult:
    """Rows in offset order (lake schema), the failures, and the offsets that carried no row."""

    rows: pa.Table
    failures: list[DecodeFailure] = field(default_factory=list)
    tombstones: int = 0

    def unknown_columns(self) -> set[str]:
        """Columns that arrived but are not in the contract: a candidate additive evolution."""
        return {f.column for f in self.failures if f.reason == Reason.SCHEMA_MISMATCH and f.column}

    @property
    def row_count(self) -> int:
        return int(self.rows.num_rows)
