"""The dead-letter topics of the watched groups: what arrives there, by reason, and how much they hold.

Each ``_cdcflow.dlq.<group>`` topic is read from its start, then incrementally. A DLQ record is counted by its
original coordinates, never by its DLQ offset: a writer killed right after a send may leave a second copy of
the same record, and that is still one bad record. The original is ``cdcflow.replayed.from`` for a record that
failed again after a replay (its ``cdcflow.source.*`` then name the replay topic), else ``cdcflow.source.*``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from services.common.kafka import Message
from services.common.kafka.offsets import DlqTail, OffsetsReader
from services.common.metrics import MonitorMetrics
from services.common.replay import replayed_from
from services.consumer.dlq import dlq_topic, source_coordinate

__all__ = ["DlqCounter", "DlqProbe"]

_REASON = "cdcflow.error.reason"
_UNKNOWN = "unknown"


def _reason(record: Message) -> str:
    raw = record.headers() or []
    for name, value in raw.items() if isinstance(raw, dict) else raw:
        if name == _REASON and value:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return _UNKNOWN


class DlqCounter:
    """Counts each original record once per group, by the reason in its error header."""

    def __init__(self) -> None:
        self._seen: dict[str, set[tuple[str, int, int]]] = {}

    def count(self, group: str, records: Iterable[Message]) -> Counter[str]:
        """The records of ``group``'s DLQ not counted before, by reason."""
        seen = self._seen.setdefault(group, set())
        reasons: Counter[str] = Counter()
        for record in records:
            # a record without source headers cannot be a duplicate of another: its DLQ coordinates identify it
            origin = (
                replayed_from(record.headers())
                or source_coordinate(record)
                or (
                    f"dlq:{record.topic()}",
                    record.partition() or 0,
                    record.offset() or 0,
                )
            )
            if origin in seen:
                continue
            seen.add(origin)
            reasons[_reason(record)] += 1
        return reasons


class DlqProbe:
    name = "dlq"

    def __init__(self, reader: OffsetsReader, tail: DlqTail, metrics: MonitorMetrics, *, group_prefix: str) -> None:
        self._reader = reader
        self._tail = tail
        self._metrics = metrics
        self._topic_prefix = dlq_topic(group_prefix)
        self._counter = DlqCounter()

    def close(self) -> None:
        self._tail.close()
        self._reader.close()

    def poll(self) -> None:
        groups = {topic: topic.removeprefix(dlq_topic("")) for topic in self._reader.topics(self._topic_prefix)}
        marks = self._reader.watermarks(self._reader.partitions(groups))
        depth: Counter[str] = Counter(dict.fromkeys(groups.values(), 0))
        for (topic, _), mark in marks.items():
            depth[groups[topic]] += mark.end - mark.start
        for group, held in depth.items():
            self._metrics.dlq_depth.labels(group).set(held)
        by_group: dict[str, list[Message]] = {}
        for message in self._tail.read(marks):
            by_group.setdefault(groups[str(message.topic())], []).append(message)
        for group, records in by_group.items():
            for reason, count in self._counter.count(group, records).items():
                self._metrics.dlq_records.labels(group, reason).inc(count)
