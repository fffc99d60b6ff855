"""What the DLQ replay tool and the lake writer agree on: the replay topic and the headers of a replayed record.

A replayed record carries its original key, value and headers plus

- ``cdcflow.replayed.from``: ``<topic>:<partition>:<offset>``, where the record was first read (Kafka topic
  names cannot hold ``:``). The writer lands a record of the replay topic with these coordinates as
  ``_kafka_topic/_kafka_partition/_kafka_offset``: bronze's idempotency key, so a record replayed twice is
  loaded once.
- ``cdcflow.replay.count``: how many times it has been replayed (1 the first time).

A DLQ record whose value was too large for the DLQ says what was done to it: compressed
(``cdcflow.value.encoding: deflate``, with its size), or left out (``cdcflow.value.omitted: true``, with its
size and SHA-256 when known); the original is then in the source topic at the ``cdcflow.source.*`` coordinates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = [
    "REPLAYED_FROM",
    "REPLAY_COUNT",
    "VALUE_ENCODING",
    "VALUE_OMITTED",
    "VALUE_SHA256",
    "VALUE_SIZE",
    "Coordinate",
    "coordinate",
    "format_coordinate",
    "header_text",
    "parse_coordinate",
    "replay_topic",
    "replayed_from",
]

REPLAYED_FROM = "cdcflow.replayed.from"
REPLAY_COUNT = "cdcflow.replay.count"
VALUE_ENCODING, VALUE_OMITTED = "cdcflow.value.encoding", "cdcflow.value.omitted"
VALUE_SIZE, VALUE_SHA256 = "cdcflow.value.size", "cdcflow.value.sha256"

Coordinate = tuple[str, int, int]
"""``(topic, partition, offset)`` of one Kafka record."""

# a legal Kafka topic name: what a coordinate's topic must be to be written and read back
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")

Header = tuple[str, str | bytes | None]
Headers = Iterable[Header] | Mapping[str, str | bytes | None] | None


def replay_topic(group_id: str) -> str:
    """The topic replayed records of ``group_id``'s DLQ go to by default; only that group reads it."""
    return f"_cdcflow.replay.{group_id}"


def format_coordinate(coordinate: Coordinate) -> str:
    topic, partition, offset = coordinate
    return f"{topic}:{partition}:{offset}"


def coordinate(topic: str | None, partition: str | None, offset: str | None) -> Coordinate | None:
    """A coordinate of its parts as text; None unless the topic is a Kafka topic name and the partition and
    offset are numbers ≥ 0 — what :func:`format_coordinate` writes and :func:`parse_coordinate` reads back."""
    if topic is None or partition is None or offset is None or not _TOPIC.fullmatch(topic):
        return None
    if not (partition.isascii() and partition.isdigit() and offset.isascii() and offset.isdigit()):
        return None
    return topic, int(partition), int(offset)


def parse_coordinate(text: str) -> Coordinate | None:
    """``<topic>:<partition>:<offset>`` → a coordinate; None when it is not one."""
    topic, sep, rest = text.partition(":")
    partition, sep2, offset = rest.partition(":")
    return coordinate(topic, partition, offset) if sep and sep2 else None


def header_text(headers: Headers, name: str) -> str | None:
    """The last value of header ``name`` as text (None when absent, null or not UTF-8)."""
    found: str | None = None
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for key, value in pairs:
        if key != name:
            continue
        if value is None:
            found = None
        elif isinstance(value, bytes):
            try:
                found = value.decode()
            except UnicodeDecodeError:
                found = None
        else:
            found = str(value)
    return found


def replayed_from(headers: Headers) -> Coordinate | None:
    """The original coordinates of a replayed record (None: not a replayed record, or a malformed header)."""
    text = header_text(headers, REPLAYED_FROM)
    return None if text is None else parse_coordinate(text)
