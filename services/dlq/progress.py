"""What the replay tool has done, per original coordinate: ``_cdcflow.dlq-progress.<group>`` (compacted).

One record per original coordinate (key ``<topic>:<partition>:<offset>``), rewritten each time the tool acts
on it, in the same Kafka transaction as the replayed record itself: the record is in the target topic if and
only if its progress entry says so. Read with ``read_committed``, the topic is the tool's whole memory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from services.common.kafka import Message
from services.common.replay import Coordinate, format_coordinate, parse_coordinate

__all__ = ["Progress", "ProgressEntry", "audit_topic", "progress_topic"]


def progress_topic(group_id: str) -> str:
    return f"_cdcflow.dlq-progress.{group_id}"


def audit_topic(group_id: str) -> str:
    return f"_cdcflow.dlq-audit.{group_id}"


@dataclass(frozen=True, slots=True)
class ProgressEntry:
    """``replays``: how many times the record has been replayed in all; ``parked``: the tool refused to replay
    it again (``note`` says why); ``plan`` and ``dlq`` (``partition:offset``): the plan and the DLQ copy of
    the last action."""

    replays: int
    parked: bool
    plan: str
    dlq: str
    target: str = ""
    note: str = ""
    at_ms: int = 0

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> ProgressEntry | None:
        try:
            data = json.loads(raw)
            return cls(
                replays=int(data["replays"]),
                parked=bool(data["parked"]),
                plan=str(data["plan"]),
                dlq=str(data["dlq"]),
                target=str(data.get("target", "")),
                note=str(data.get("note", "")),
                at_ms=int(data.get("at_ms", 0)),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def handled(self, replay_count: int) -> bool:
        """Whether the copy of the record with ``replay_count`` was acted on (replayed since, or parked)."""
        return self.replays > replay_count or (self.parked and self.replays >= replay_count)


class Progress:
    """The latest entry per original coordinate."""

    def __init__(self, entries: dict[Coordinate, ProgressEntry] | None = None) -> None:
        self.entries: dict[Coordinate, ProgressEntry] = dict(entries or {})

    @classmethod
    def of(cls, messages: list[Message]) -> Progress:
        """From the topic's records in offset order (a later record of a key replaces the earlier one)."""
        entries: dict[Coordinate, ProgressEntry] = {}
        for message in messages:
            key = message.key()
            coordinate = parse_coordinate(key.decode(errors="replace")) if key else None
            value = message.value()
            entry = ProgressEntry.decode(value) if value else None
            if coordinate is not None and entry is not None:
                entries[coordinate] = entry
        return cls(entries)

    def get(self, coordinate: Coordinate) -> ProgressEntry | None:
        return self.entries.get(coordinate)

    def put(self, coordinate: Coordinate, entry: ProgressEntry) -> None:
        self.entries[coordinate] = entry

    @staticmethod
    def key(coordinate: Coordinate) -> bytes:
        return format_coordinate(coordinate).encode()
