"""One DLQ record, read back: where it came from, why, and its original key, value and headers.

The DLQ publisher (``services/consumer/dlq.py``) writes a record in one of three forms: as it came, with its
value compressed (``cdcflow.value.encoding: deflate``), or without its value (``cdcflow.value.omitted: true``,
its size and SHA-256 in headers; the original is still in the source topic at the ``cdcflow.source.*``
coordinates while retention keeps it). :meth:`DlqRecord.original_value` undoes the first two; the third needs
the source topic (:class:`ValueOmittedError`).

A record's identity is its *original* coordinate: ``cdcflow.replayed.from`` when it failed again after a
replay, else ``cdcflow.source.*``. The DLQ can hold one identity more than once: a writer killed between the
DLQ acknowledgement and its offset commit publishes it again (same replay count), and a replayed record
that fails again comes back with a higher ``cdcflow.replay.count``.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.common.kafka import Message
from services.common.replay import (
    REPLAY_COUNT,
    REPLAYED_FROM,
    VALUE_ENCODING,
    VALUE_OMITTED,
    VALUE_SHA256,
    VALUE_SIZE,
    Coordinate,
    coordinate,
    header_text,
    replayed_from,
)

__all__ = ["DlqRecord", "ValueOmittedError", "inflate", "pretty_value"]

Header = tuple[str, str | bytes | None]

_TOOL_HEADERS = ("cdcflow.error.", "cdcflow.source.", "cdcflow.value.", "cdcflow.worker", REPLAY_COUNT, REPLAYED_FROM)
_LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the last instant a datetime holds
_MAX_INFLATED = 256 << 20  # no Kafka record is larger; a value that inflates beyond it is not one of ours


class ValueOmittedError(Exception):
    """The DLQ record holds no value: it was too large for the DLQ; the original is in the source topic."""


def inflate(data: bytes, expected_size: int | None = None) -> bytes:
    """A deflated value back; ValueError when it is not zlib data or not the size the headers announce."""
    inflater = zlib.decompressobj()
    try:
        value = inflater.decompress(data, _MAX_INFLATED)
    except zlib.error as exc:
        raise ValueError(f"the value is not zlib data: {exc}") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError("the value does not inflate to one complete zlib stream within 256 MiB")
    if expected_size is not None and len(value) != expected_size:
        raise ValueError(f"the value inflates to {len(value)} bytes, its header says {expected_size}")
    return value


@dataclass(frozen=True, slots=True)
class DlqRecord:
    group: str
    dlq_partition: int
    dlq_offset: int
    source: Coordinate | None  # cdcflow.source.*: where the writer read it (the replay topic for a replayed one)
    original: Coordinate | None  # the identity: cdcflow.replayed.from, else the source
    reason: str
    error_class: str
    error_message: str
    error_stage: str
    error_time_ms: int
    replay_count: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    timestamp_ms: int

    @classmethod
    def of(cls, message: Message, group: str) -> DlqRecord:
        headers = tuple(_header_list(message.headers()))
        source = _source(headers)
        _, timestamp_ms = message.timestamp()
        error_time = _int(header_text(headers, "cdcflow.error.time"))
        if error_time is None or not 0 <= error_time <= _LAST_MS:  # absent, or no time a date can show
            error_time = min(max(0, int(timestamp_ms)), _LAST_MS)
        return cls(
            group=group,
            dlq_partition=int(message.partition() or 0),
            dlq_offset=int(message.offset() or 0),
            source=source,
            original=replayed_from(headers) or source,
            reason=header_text(headers, "cdcflow.error.reason") or "unknown",
            error_class=header_text(headers, "cdcflow.error.class") or "",
            error_message=header_text(headers, "cdcflow.error.message") or "",
            error_stage=header_text(headers, "cdcflow.error.stage") or "",
            error_time_ms=error_time,
            replay_count=_int(header_text(headers, REPLAY_COUNT)) or 0,
            key=message.key(),
            value=message.value(),
            headers=headers,
            timestamp_ms=int(timestamp_ms),
        )

    @property
    def dlq_coordinate(self) -> tuple[int, int]:
        return self.dlq_partition, self.dlq_offset

    @property
    def encoding(self) -> str:
        return header_text(self.headers, VALUE_ENCODING) or ""

    @property
    def omitted(self) -> bool:
        return header_text(self.headers, VALUE_OMITTED) == "true"

    @property
    def declared_size(self) -> int | None:
        return _int(header_text(self.headers, VALUE_SIZE))

    @property
    def declared_sha256(self) -> str | None:
        return header_text(self.headers, VALUE_SHA256)

    def table(self) -> str:
        """``schema.table`` of the original topic ``<prefix>.<schema>.<table>`` (else the topic's name)."""
        if self.original is None:
            return "?"
        parts = self.original[0].split(".")
        return ".".join(parts[1:]) if len(parts) == 3 else self.original[0]

    def hour(self) -> str:
        """The UTC hour it was dead-lettered, ``YYYY-MM-DDTHH``."""
        return datetime.fromtimestamp(self.error_time_ms / 1000, UTC).strftime("%Y-%m-%dT%H")

    def original_value(self) -> bytes | None:
        """The value as the source topic held it. Raises :class:`ValueOmittedError` (and ValueError on a deflated
        value that does not inflate to what its headers say)."""
        if self.omitted:
            raise ValueOmittedError(
                f"the value ({self.declared_size} bytes) was left out of the DLQ; the original is at {self.source}"
            )
        if self.value is not None and self.encoding == "deflate":
            return inflate(self.value, self.declared_size)
        if self.encoding not in {"", "deflate"}:
            raise ValueError(f"unknown value encoding {self.encoding!r}")
        return self.value

    def matches_omitted(self, value: bytes | None) -> bool:
        """Whether ``value`` (read from the source topic) is the one this record left out."""
        if value is None:
            return False
        digest = self.declared_sha256
        return digest is None or hashlib.sha256(value).hexdigest() == digest

    def original_headers(self) -> list[Header]:
        """The record's own headers, without those the writer and earlier replays added."""
        return [(k, v) for k, v in self.headers if not k.startswith(_TOOL_HEADERS)]

    def describe(self) -> dict[str, Any]:
        """Everything about the record as plain data (``cdcflow dlq show``)."""
        try:
            value: Any = pretty_value(self.original_value())
        except (ValueOmittedError, ValueError) as exc:
            value = {"unavailable": str(exc)}
        return {
            "group": self.group,
            "dlq": f"{self.dlq_partition}:{self.dlq_offset}",
            "original": None if self.original is None else ":".join(map(str, self.original)),
            "source": None if self.source is None else ":".join(map(str, self.source)),
            "table": self.table(),
            "replay_count": self.replay_count,
            "error": {
                "reason": self.reason,
                "class": self.error_class,
                "stage": self.error_stage,
                "message": self.error_message,
                "time": datetime.fromtimestamp(self.error_time_ms / 1000, UTC).isoformat(),
            },
            "headers": {k: _header_repr(v) for k, v in self.headers},
            "key": pretty_value(self.key),
            "value_encoding": self.encoding or ("omitted" if self.omitted else "as is"),
            "value": value,
        }


def pretty_value(raw: bytes | None) -> Any:
    """A value as JSON when it is JSON (a Debezium event), else as text, else as hex."""
    if raw is None:
        return None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return {"hex": raw[:4096].hex(), "bytes": len(raw)}
    try:
        return json.loads(text)
    except ValueError:
        return text


def _header_repr(value: str | bytes | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        return "0x" + value.hex()


def _header_list(raw: Any) -> list[Header]:
    if raw is None:
        return []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _source(headers: tuple[Header, ...]) -> Coordinate | None:
    """Where the writer read the record; None unless its headers name a coordinate that reads back the same
    from the replay progress (a garbled one is an unidentified record, never replayed as another)."""
    return coordinate(
        header_text(headers, "cdcflow.source.topic"),
        header_text(headers, "cdcflow.source.partition"),
        header_text(headers, "cdcflow.source.offset"),
    )
